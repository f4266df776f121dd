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
            let v = parsed
                .clone()
                .unwrap_or_else(|| panic!("an event from a line that is not JSON: {:?}", shown()));
            // The typed reader also takes a JSON array of the fields in order.
            let field = |v: &Json, name: &str, i: usize| -> Option<Json> {
                v.get(name).or_else(|| v.get(i)).cloned()
            };
            assert_eq!(field(&v, "Type", 0), Some(Json::from("service")), "{:?}", shown());
            let actor = field(&v, "Actor", 2).expect("an Actor");
            assert_eq!(field(&actor, "ID", 0), Some(Json::from(ev.service_id.clone())), "{:?}", shown());
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
            a.get("name").and_then(|n| n.as_str()).unwrap_or("").to_string()
        }
        Some(_) => return None,
    };
    Some(ServiceEvent {
        action,
        service_id,
        name,
    })
}
