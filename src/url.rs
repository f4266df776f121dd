//! Percent-encoding of one URL path segment or query value, for the HTTP APIs
//! we call by hand (GitLab's variables, the Docker Engine): everything but
//! RFC 3986's unreserved characters is escaped, so `group/project` or a JSON
//! filter survive as one component.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_all_but_unreserved() {
        assert_eq!(
            super::encode_component("group/sub project"),
            "group%2Fsub%20project"
        );
        assert_eq!(super::encode_component("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            super::encode_component(r#"{"a":["b"]}"#),
            "%7B%22a%22%3A%5B%22b%22%5D%7D"
        );
        assert_eq!(super::encode_component("é"), "%C3%A9");
    }
}
