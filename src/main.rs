//! `jobsphere-chat [serve|token|migrate|healthcheck|probe]`: parse configuration, set up
//! telemetry, run.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jobsphere_chat::{
    auth::Jwt,
    chat::{
        model::{Role, User},
        validate,
    },
    config::{Cli, Command, Config, TokenArgs},
    store::mongo::MongoSettings,
    telemetry,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", jobsphere_chat::http::openapi::document());
        return Ok(());
    }
    // The checks run beside a node (same environment) and need none of its configuration rules.
    if let Some(Command::Healthcheck(args)) = &cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(jobsphere_chat::probe::healthcheck(&cli.config, args));
    }
    cli.config.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.config.worker_threads {
        runtime.worker_threads(n.into());
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Healthcheck(args) => jobsphere_chat::probe::healthcheck(&cli.config, &args).await,
            Command::Probe(args) => jobsphere_chat::probe::probe(&cli.config, &args).await,
            Command::Serve => serve(cli.config).await,
            Command::Token(args) => token(cli.config, args).await,
            Command::Openapi => Ok(()),
            Command::Migrate(args) => migrate(cli.config, args.dry_run).await,
        }
    })
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    // `cargo run` from the repository serves the built client without configuration.
    if config.web_dir.is_none() && std::path::Path::new("web/dist/index.html").is_file() {
        config.web_dir = Some("web/dist".into());
    }
    let telemetry = telemetry::init_tracing(&config)?;
    telemetry::init_metrics(&config).context("starting the metrics endpoint")?;
    let listener =
        tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
    let res = jobsphere_chat::run(config, listener, shutdown_signal()).await;
    telemetry.shutdown();
    res
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received");
}

/// `migrate [--dry-run]`: creates the store's indexes, or (MongoDB) prints what it would do.
async fn migrate(config: Config, dry_run: bool) -> anyhow::Result<()> {
    if !dry_run {
        jobsphere_chat::node::open_store(&config).await?;
        eprintln!("store migrated");
        return Ok(());
    }
    let Some(settings) = MongoSettings::from_config(&config) else {
        println!("SQLite store: migrate creates its tables and indexes if missing; nothing can conflict");
        return Ok(());
    };
    let plan = jobsphere_chat::store::mongo::plan(&settings).await?;
    println!("{plan}");
    anyhow::ensure!(plan.is_buildable(), "migrate would refuse (see above)");
    Ok(())
}

/// Prints a signed JWT for a user and registers the user in the store.
async fn token(config: Config, args: TokenArgs) -> anyhow::Result<()> {
    validate::user_id("--user", &args.user).map_err(|e| anyhow::anyhow!("{e}"))?;
    let role =
        Role::parse(&args.role).ok_or_else(|| anyhow::anyhow!("--role must be customer, contractor or admin"))?;
    let user =
        User { name: args.name.unwrap_or_else(|| args.user.clone()), id: args.user, email: None, role, avatar: None };
    let jwt = Jwt::from_config(&config)?;
    let token = jwt.sign(&user, args.ttl.max(Duration::from_secs(1)))?;
    let store = jobsphere_chat::node::open_store(&config).await?;
    store.upsert_user(&user).await?;
    println!("{token}");
    Ok(())
}
