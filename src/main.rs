//! The `ecr-auth` binary. It only dispatches: under a `docker-credential-*`
//! name it is the credential helper, otherwise the `ecr-auth` command line.
//! First it hardens the process (no core dumps, not dumpable, quiet on EPIPE).

fn main() {
    ecr_auth::hardening::apply();
    std::process::exit(ecr_auth::cli::main(std::env::args_os().collect()));
}
