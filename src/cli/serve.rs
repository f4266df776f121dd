//! `ecr-auth serve`: the token broker (see [`crate::broker`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::Context;
use crate::broker::allow::AllowList;
use crate::broker::{self, metrics::Metrics, server, socket, AllowEntry, Broker, Scopes};
use crate::env::Env;
use crate::tokens::Tokens;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The unix socket to listen on [default: `socket` in [broker], else /run/ecr-auth/broker.sock].
    #[arg(long, value_name = "PATH", env = "ECR_AUTH_SOCKET")]
    pub socket: Option<PathBuf>,
    /// A registry host the broker may hand out tokens for, or a pattern where
    /// `*` is one DNS label (`*.dkr.ecr.eu-west-1.amazonaws.com`). Repeatable;
    /// replaces `allow` of the config file's [broker] section (per-registry
    /// `pull_only` lives there only).
    #[arg(long = "allow", value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// The group that may use the socket (mode 0660).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Also serve /metrics on this loopback TCP address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Hand out pull-only tokens for every allowed registry: AssumeRole with a
    /// session policy that allows only pulls from --repository (per registry:
    /// `[[broker.allow]]` entries of the config file).
    #[arg(long)]
    pub pull_only: bool,
    /// The role assumed for --pull-only.
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,
    /// A repository ARN pattern pull-only tokens may pull (repeatable).
    #[arg(long = "repository", value_name = "ARN")]
    pub repositories: Vec<String>,
    /// Open connections at most; more are closed at once.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub max_connections: usize,
}

/// The broker logs one audit line per request: `info` unless ECR_AUTH_LOG says otherwise.
pub fn log_env(env: &Env) -> Env {
    let mut env = env.clone();
    if env.get("ECR_AUTH_LOG").is_none() {
        env.set("ECR_AUTH_LOG", "info");
    }
    env
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let config = ctx.load_config()?;
    let mut settings = config.broker.clone().unwrap_or_default();
    if !args.allow.is_empty() {
        settings.allow = args.allow.iter().map(AllowEntry::host).collect();
    }
    if args.pull_only {
        settings.pull_only = true;
    }
    if let Some(r) = &args.role_arn {
        settings.role_arn = Some(r.clone());
    }
    if !args.repositories.is_empty() {
        settings.repositories = args.repositories.clone();
    }
    let socket_path = args
        .socket
        .clone()
        .or(settings.socket.clone())
        .unwrap_or_else(|| PathBuf::from(broker::DEFAULT_SOCKET));
    let group = args.group.clone().or(settings.group.clone());
    let metrics_addr = args.metrics_addr.clone().or(settings.metrics_addr.clone());

    let allow = AllowList::new(
        &settings.allow_hosts(),
        &settings.accounts,
        &settings.regions,
        settings.public,
    )
    .map_err(|e| anyhow::anyhow!("the broker refuses to start: {e}"))?;
    let scopes = Scopes::from_settings(&settings)
        .map_err(|e| anyhow::anyhow!("the broker refuses to start: {e}"))?;
    let gid = group.as_deref().map(socket::group_id).transpose()?;
    let metrics_addr: Option<std::net::SocketAddr> = metrics_addr
        .map(|a| {
            let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                anyhow::anyhow!("--metrics-addr {a:?} is not an address like 127.0.0.1:9464")
            })?;
            anyhow::ensure!(
                addr.ip().is_loopback(),
                "--metrics-addr {addr}: the broker serves metrics on loopback addresses only (127.0.0.1, ::1)"
            );
            Ok(addr)
        })
        .transpose()?;
    raise_open_files_limit();

    let tokens = Tokens::builder(ctx.env.clone(), config)
        .in_memory()
        .cache(None)
        .broker(None)
        .build();
    let broker = Broker::new(tokens, allow, scopes);
    let metrics = Arc::new(Metrics::default());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let std_listener = socket::bind(&socket_path, gid)?;
        let ours = socket::identity(&socket_path);
        std_listener
            .set_nonblocking(true)
            .context("cannot make the socket non-blocking")?;
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .context("cannot listen on the socket")?;
        let metrics_tcp = match metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?,
            ),
            None => None,
        };
        tracing::info!(
            "ecr-auth broker listening on {} (mode 0660{}){}",
            socket_path.display(),
            group
                .as_deref()
                .map(|g| format!(", group {g}"))
                .unwrap_or_default(),
            metrics_addr
                .map(|a| format!(", metrics on http://{a}/metrics"))
                .unwrap_or_default()
        );
        let limits = server::Limits {
            max_connections: args.max_connections.max(1),
            ..Default::default()
        };
        server::serve(
            listener,
            metrics_tcp,
            broker,
            metrics,
            limits,
            stop_signal(),
        )
        .await;
        socket::remove(&socket_path, ours);
        tracing::info!("ecr-auth broker stopped; removed {}", socket_path.display());
        Ok::<_, anyhow::Error>(())
    })?;
    runtime.shutdown_background();
    Ok(0)
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("ecr-auth broker stopping: finishing requests in flight");
}

/// Every connection is a file descriptor: allow as many as the hard limit.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
