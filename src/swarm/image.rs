//! The registry host of an image reference, by Docker's own rule: the first path
//! component is a host only if it has a `.` or a `:`, or is `localhost`;
//! otherwise the image lives on Docker Hub.

/// Docker Hub, for references without a registry host.
pub const DOCKER_HUB: &str = "docker.io";

/// The registry host as written in `image` (`127.0.0.1:5000`,
/// `123456789012.dkr.ecr.eu-west-1.amazonaws.com`), or [`DOCKER_HUB`].
pub fn registry_host(image: &str) -> &str {
    let image = image.trim();
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => DOCKER_HUB,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_references() {
        let table = [
            ("nginx", "docker.io"),
            ("nginx:1.25", "docker.io"),
            ("library/nginx@sha256:abc", "docker.io"),
            ("myorg/app:1", "docker.io"),
            ("localhost/app", "localhost"),
            ("localhost:5000/app:1", "localhost:5000"),
            ("127.0.0.1:5055/app:1@sha256:677e", "127.0.0.1:5055"),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1.2@sha256:00",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            ),
            ("public.ecr.aws/nginx/nginx:latest", "public.ecr.aws"),
            ("registry.internal:5000/a/b/c", "registry.internal:5000"),
        ];
        for (image, host) in table {
            assert_eq!(registry_host(image), host, "{image}");
        }
    }
}
