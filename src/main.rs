//! The `ecr-auth` binary. It only dispatches: under a `docker-credential-*`
//! name it is the credential helper, otherwise the `ecr-auth` command line.

fn main() {
    std::process::exit(ecr_auth::cli::main(std::env::args_os().collect()));
}
