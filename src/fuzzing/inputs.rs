//! Fuzz targets for what the daemons read from outside: the Swarm credentials
//! file and Docker's event stream.

use serde_json::Value as Json;

use crate::swarm::docker::{parse_event, ServiceEvent};
use crate::swarm::envfile::EnvFile;

/// The only messages the env file parser may give, with `{}` for the variable's
/// name: nothing else from the line (a value, a pasted key) can appear in them.
const ENVFILE_MESSAGES: &[&str] = &[
    "{} has no `=` and no value",
    "{} is followed by something other than `=`",
    "no AWS_* or ECR_AUTH_* variable name before an `=`",
    "the value of {}: the ' quote is not closed",
    "the value of {}: the \" quote is not closed",
    "the value of {}: contains white space; quote it",
    "the value of {}: unexpected text after the closing quote",
];

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Swarm env file (`/run/secrets/ecr_auth_creds`): never panics; an error names
/// a real line (one that is neither blank nor a comment) and is one of the known
/// sentences, whose only variable part is a name standing before any `=` on
/// that line — never a value; the variables it takes are `AWS_*`/`ECR_AUTH_*`,
/// and written back quoted they parse to the same values; `Debug` shows no value.
pub(crate) fn swarm_envfile(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match EnvFile::parse(text) {
        Err((n, message)) => {
            let line = text
                .lines()
                .nth(n.wrapping_sub(1))
                .unwrap_or_else(|| panic!("line {n} does not exist: {message}"));
            let trimmed = line.trim();
            assert!(
                !trimmed.is_empty() && !trimmed.starts_with('#'),
                "line {n} is blank or a comment: {message}"
            );
            let before_eq = line.split('=').next().unwrap_or("");
            let fits = ENVFILE_MESSAGES.iter().any(|m| match m.split_once("{}") {
                None => message == *m,
                Some((head, tail)) => message
                    .strip_prefix(head)
                    .and_then(|r| r.strip_suffix(tail))
                    .is_some_and(|name| is_name(name) && before_eq.contains(name)),
            });
            assert!(fits, "line {n}: an unknown message (a value?): {message:?}");
        }
        Ok(f) => {
            let mut rendered = String::new();
            for (name, value) in &f.vars {
                assert!(
                    name.starts_with("AWS_") || name.starts_with("ECR_AUTH_"),
                    "{name} taken"
                );
                assert!(is_name(name), "{name:?}");
                let v = value.expose();
                assert!(!v.contains('\n'), "a value over two lines");
                if v.contains('\'') {
                    let escaped: String = v
                        .chars()
                        .flat_map(|c| match c {
                            '"' | '\\' | '$' | '`' => vec!['\\', c],
                            c => vec![c],
                        })
                        .collect();
                    rendered.push_str(&format!("export {name}=\"{escaped}\"\n"));
                } else {
                    rendered.push_str(&format!("export {name}='{v}'\n"));
                }
            }
            let again = EnvFile::parse(&rendered)
                .unwrap_or_else(|(n, m)| panic!("written back, line {n}: {m}\n{rendered}"));
            let pairs = |f: &EnvFile| -> Vec<(String, String)> {
                f.vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().clone()))
                    .collect()
            };
            assert_eq!(pairs(&again), pairs(&f), "values changed when written back");
            let debug = format!("{f:?}");
            for (name, value) in &f.vars {
                let v = value.expose();
                let in_a_name = f.vars.iter().any(|(k, _)| k.contains(v.as_str()))
                    || f.ignored.iter().any(|k| k.contains(v.as_str()));
                if v.len() >= 6 && !in_a_name && !"EnvFile vars ignored Secret".contains(v.as_str())
                {
                    assert!(!debug.contains(v.as_str()), "Debug shows {name}'s value");
                }
            }
        }
    }
}

/// Docker event stream, one line at a time: never panics; an event is reported
/// only for a service event and carries its `Actor.ID`, `Action` and name; a
/// service event as the Engine API documents it (an object with string `Type`,
/// `Action`, `Actor.ID` and `Actor.Attributes` values) is never dropped, nor
/// when spaces or a `\r` surround it.
pub(crate) fn docker_events(input: &[u8]) {
    for line in input.split(|&b| b == b'\n') {
        let shown = || String::from_utf8_lossy(line).into_owned();
        let parsed: Option<Json> = std::str::from_utf8(line)
            .ok()
            .and_then(|t| serde_json::from_str(t.trim()).ok());
        if let Some(ev) = parse_event(line) {
            let Some(v) = parsed.clone() else {
                // serde_json's Value holds no number beyond f64 (`1e999`), which
                // the event reader skips in a field it ignores: valid JSON all the same.
                let e = serde_json::from_slice::<Json>(line.trim_ascii()).unwrap_err();
                assert!(
                    e.to_string().contains("number out of range"),
                    "an event from a line that is not JSON ({e}): {:?}",
                    shown()
                );
                continue;
            };
            // The typed reader also takes a JSON array of the fields in order.
            let field = |v: &Json, name: &str, i: usize| -> Option<Json> {
                v.get(name).or_else(|| v.get(i)).cloned()
            };
            assert_eq!(
                field(&v, "Type", 0),
                Some(Json::from("service")),
                "{:?}",
                shown()
            );
            let actor = field(&v, "Actor", 2).expect("an Actor");
            assert_eq!(
                field(&actor, "ID", 0),
                Some(Json::from(ev.service_id.clone())),
                "{:?}",
                shown()
            );
            let action = field(&v, "Action", 1).unwrap_or(Json::from(""));
            assert_eq!(action, Json::from(ev.action.clone()), "{:?}", shown());
            let name = field(&actor, "Attributes", 1)
                .and_then(|a| a.get("name").cloned())
                .unwrap_or(Json::from(""));
            assert_eq!(name, Json::from(ev.name.clone()), "{:?}", shown());
        }
        // Written out again by a generic JSON writer (one value per key).
        let Some(v) = parsed else { continue };
        let Some(expected) = documented_service_event(&v) else {
            continue;
        };
        let canonical = v.to_string();
        assert_eq!(
            parse_event(canonical.as_bytes()).as_ref(),
            Some(&expected),
            "a service event was dropped: {canonical}"
        );
        let padded = format!(" \t{canonical}\r");
        assert_eq!(
            parse_event(padded.as_bytes()).as_ref(),
            Some(&expected),
            "padding dropped the event: {padded:?}"
        );
    }
}

/// A service event as the Engine API documents it, with its fields.
fn documented_service_event(v: &Json) -> Option<ServiceEvent> {
    let o = v.as_object()?;
    if o.get("Type")? != "service" {
        return None;
    }
    let action = match o.get("Action") {
        None => String::new(),
        Some(a) => a.as_str()?.to_string(),
    };
    let actor = o.get("Actor")?.as_object()?;
    let service_id = actor.get("ID")?.as_str()?.to_string();
    let name = match actor.get("Attributes") {
        None => String::new(),
        Some(Json::Object(a)) => {
            if a.values().any(|v| !v.is_string()) {
                return None;
            }
            a.get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string()
        }
        Some(_) => return None,
    };
    Some(ServiceEvent {
        action,
        service_id,
        name,
    })
}

/// The GitLab token and the value the fuzzed requests "sent".
const GITLAB_TOKEN: &str = "glpat-FuzzToken0123456789";
const SENT_VALUE: &str = r#"{"auths":{"123456789012.dkr.ecr.eu-west-1.amazonaws.com":{"auth":"QVdTOmZ1enotc2VjcmV0LXBhc3N3b3JkLTAxMjM0NTY3ODk="}}}"#;

/// GitLab API answers (`METHOD STATUS [RETRY-AFTER]` on the first line, then
/// the body): never
/// panics; a variable read is the body's; an error is one line without control
/// characters and never shows the token, the value sent, or a `value`, `auth`,
/// `password` or `token` string of the answer (no 12 characters of one in a row).
pub(crate) fn gitlab_answers(input: &[u8]) {
    use crate::gitlab::variables::{read_answer, write_answer, Call, Owner, Reply};
    use hyper::Method;
    let (head, body) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&b""[..], input),
    };
    let head = String::from_utf8_lossy(head);
    let mut words = head.split_whitespace();
    let method = match words.next() {
        Some("PUT") => Method::PUT,
        Some("POST") => Method::POST,
        _ => Method::GET,
    };
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(400 + (input.len() % 200) as u16);
    let reply = Reply {
        status,
        retry_after: words.next().map(str::to_string),
        body: bytes::Bytes::copy_from_slice(body),
    };
    let owner = Owner::Project("team/app".into());
    let sent = if method == Method::GET {
        None
    } else {
        Some(SENT_VALUE)
    };
    let call = Call {
        method: method.clone(),
        url: "https://gitlab.example.com/api/v4/projects/team%2Fapp/variables/DOCKER_AUTH_CONFIG"
            .into(),
        owner: &owner,
        key: "DOCKER_AUTH_CONFIG",
        secrets: [Some(GITLAB_TOKEN), sent].into_iter().flatten().collect(),
    };
    let error = if method == Method::GET {
        match read_answer(&call, &reply) {
            Ok(Some(v)) => {
                // serde_json skips an ignored field without checking its
                // escapes or its numbers; the generic reader then refuses the body.
                let Ok(doc) = serde_json::from_slice::<Json>(body) else {
                    return;
                };
                assert_eq!(
                    doc.get("value").and_then(|v| v.as_str()),
                    Some(v.value.expose().as_str())
                );
                assert_eq!(
                    doc.get("key").and_then(|v| v.as_str()),
                    Some(v.key.as_str())
                );
                return;
            }
            Ok(None) => {
                assert_eq!(status, 404, "no variable from a {status}");
                return;
            }
            Err(e) => e,
        }
    } else {
        match write_answer(&call, &reply) {
            Ok(()) => {
                assert!((200..300).contains(&status), "a {status} taken for success");
                return;
            }
            Err(e) => e,
        }
    };
    if let Some(r) = error.retry_after() {
        // However absurd the header, the wait is a number of seconds from now.
        assert!(r.seconds_from(1_700_000_000) >= 0);
    }
    let shown = error.to_string();
    assert!(
        !shown.chars().any(char::is_control),
        "control characters in: {shown:?}"
    );
    // What the error says of its own (the URL, the key, the owner, the status
    // with its reason phrase) may share letters with a fuzzed secret; only the
    // rest could come from the answer.
    let theirs = shown
        .replace(call.url.as_str(), "<url>")
        .replace(call.key, "<key>")
        .replace(&owner.to_string(), "<owner>")
        .replace("403 Forbidden", "<status>");
    let mut secrets: Vec<String> = vec![GITLAB_TOKEN.into()];
    secrets.extend(sent.map(str::to_string));
    if let Ok(doc) = serde_json::from_slice::<Json>(body) {
        secret_strings(&doc, &mut secrets);
    }
    for s in &secrets {
        if let Some(w) = leaked(&theirs, s) {
            panic!("the error shows {w:?} of a secret: {shown}");
        }
    }
}

/// The strings under credential-like keys of a JSON answer (not inside its
/// `message`/`error`, which are GitLab's own words).
fn secret_strings(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("message" | "error", _) => {}
                    ("value" | "auth" | "password" | "token", Json::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => secret_strings(x, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|x| secret_strings(x, out)),
        _ => {}
    }
}

/// A piece of `secret` that `text` shows: the whole of a short one (6 to 11
/// characters), or any 12 characters in a row of a longer one.
fn leaked(text: &str, secret: &str) -> Option<String> {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 6 {
        return None;
    }
    if chars.len() < 12 {
        return text.contains(secret).then(|| secret.to_string());
    }
    chars
        .windows(12)
        .map(|w| w.iter().collect::<String>())
        .find(|w| text.contains(w.as_str()))
}
