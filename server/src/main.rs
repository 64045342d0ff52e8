//! `picket-server`: the control plane binary. A thin CLI over the library:
//! `serve` (the default) runs the server; `gen-secret` prints a fresh master
//! secret; `check-config` validates the configuration and exits; `admin
//! rotate-signing-key` rotates the job-signing key (see [`picket_server::keys`]);
//! `admin rotate-master-secret --new-secret-file PATH` re-wraps every key
//! under a new master secret in one transaction.
//! `admin audit ...` verifies, checkpoints, exports and prunes the audit log
//! (`verify-export` works offline, without configuration).

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use picket_server::ServerConfig;
use picket_server::config::{LogFormat, ProcessEnv};
use tokio_util::sync::CancellationToken;

/// Picket control plane: approvals, deployments and the agent fleet.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file. Every key can also be set with a PICKET_* variable (see config-examples/server.toml).
    #[arg(
        long,
        short,
        env = "PICKET_CONFIG",
        default_value = "/etc/picket/server.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration, open the database and exit.
    CheckConfig,
    /// Print a new random master secret (48 bytes, base64) to put in a file named by master_secret_file.
    GenSecret,
    /// Administrative commands run on the server host.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Rotate the job-signing key: a new key, endorsed by the current one,
    /// becomes active; agents accept jobs signed by the old key until the
    /// overlap window ends. Restart the server (every replica) afterwards.
    RotateSigningKey {
        /// How long agents keep accepting jobs signed by the old key, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = picket_server::keys::DEFAULT_OVERLAP_SECS)]
        overlap_secs: u64,
    },
    /// Re-wrap every tenant key and the job-signing key from the configured
    /// master secret to a new one, in one database transaction. Stop the
    /// servers first; afterwards point master_secret_file at the new secret.
    RotateMasterSecret {
        /// File holding the new secret (base64 or hex, at least 32 bytes).
        #[arg(long)]
        new_secret_file: PathBuf,
    },
    /// The tamper-evident audit log (docs/audit.md).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every tree from the database and check it against the signed checkpoints; names the first bad event. Exit status 1 if anything is wrong.
    Verify {
        /// Only this log: a tenant id, or `system`.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Sign a checkpoint of every log that grew, now.
    Checkpoint,
    /// Export one log by time range (checkpointing it first); the export is audited.
    Export {
        /// The tenant id, or `system`.
        #[arg(long)]
        tenant: String,
        /// jsonl (with checkpoint and inclusion proofs), cef or syslog.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// From this time (RFC 3339, inclusive).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (RFC 3339, exclusive).
        #[arg(long)]
        until: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a JSON Lines export offline (signature, leaf hashes, inclusion proofs).
    VerifyExport {
        /// The export file.
        file: PathBuf,
        /// The server's Ed25519 public key (base64) to trust; without it the key in the file is used and its fingerprint printed for you to compare.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Delete event bodies older than the retention (their leaf hashes and checkpoints stay); audited.
    Prune {
        /// The tenant id, or `system`.
        #[arg(long)]
        tenant: String,
        /// Override `audit.retention_days`.
        #[arg(long)]
        older_than_days: Option<u32>,
    },
}

/// `--tenant` value: a tenant id, or `system` for the system log.
fn tenant_arg(v: &str) -> anyhow::Result<Option<uuid::Uuid>> {
    if v == picket_server::audit::SYSTEM_LOG {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        anyhow::anyhow!("--tenant: expected a tenant id (UUID) or `system`, got {v:?}")
    })
}

fn time_arg(name: &str, v: Option<&str>) -> anyhow::Result<Option<i64>> {
    v.map(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| {
                anyhow::anyhow!("{name}: expected an RFC 3339 time such as 2026-11-23T10:00:00Z")
            })
    })
    .transpose()
}

/// `admin audit verify-export`: offline, no configuration needed.
fn verify_export(file: &std::path::Path, public_key: Option<&str>) -> anyhow::Result<()> {
    let key = public_key
        .map(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| anyhow::anyhow!("--public-key: expected 32 bytes in base64"))
        })
        .transpose()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    match picket_server::audit::export::verify_jsonl(&text, key) {
        Ok(r) => {
            println!(
                "OK: {} events of log {} verified against its signed checkpoint of size {}",
                r.events, r.log_id, r.size
            );
            if r.key_from_file {
                println!(
                    "the checkpoint was verified with the key named in the file, fingerprint {}: compare it with the server's (or pass --public-key)",
                    r.key_fingerprint
                );
            }
            Ok(())
        }
        Err(e) => {
            println!("FAILED: {e}");
            anyhow::bail!("the export does not verify")
        }
    }
}

async fn admin_audit(config: &ServerConfig, command: AuditCommand) -> anyhow::Result<()> {
    use picket_server::audit::{admin, export::Format};
    picket_server::prepare(config)?;
    let db = picket_server::db::connect(&config.database_url).await?;
    match command {
        AuditCommand::Verify { tenant } => {
            let only = tenant
                .as_deref()
                .map(tenant_arg)
                .transpose()?
                .map(admin::log_of);
            let (report, ok) = admin::verify(&db, only.as_deref()).await?;
            print!("{report}");
            if !ok {
                anyhow::bail!("the audit log does not verify");
            }
        }
        AuditCommand::Checkpoint => {
            let keys =
                picket_server::keys::ServerKeys::load_or_create(&db, &config.master_secret).await?;
            print!("{}", admin::checkpoint(&db, &keys).await?);
        }
        AuditCommand::Export {
            tenant,
            format,
            since,
            until,
            out,
        } => {
            let format = Format::parse(&format)
                .ok_or_else(|| anyhow::anyhow!("--format: expected jsonl, cef or syslog"))?;
            let keys =
                picket_server::keys::ServerKeys::load_or_create(&db, &config.master_secret).await?;
            let body = admin::export_log(
                &db,
                &keys,
                tenant_arg(&tenant)?,
                time_arg("--since", since.as_deref())?,
                time_arg("--until", until.as_deref())?,
                format,
            )
            .await?;
            match out {
                Some(p) => std::fs::write(&p, body)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => print!("{body}"),
            }
        }
        AuditCommand::Prune {
            tenant,
            older_than_days,
        } => {
            let days = older_than_days.unwrap_or(config.audit.retention_days);
            if days == 0 {
                anyhow::bail!("--older-than-days: expected at least 1");
            }
            let keys =
                picket_server::keys::ServerKeys::load_or_create(&db, &config.master_secret).await?;
            print!(
                "{}",
                admin::prune(&db, &keys, tenant_arg(&tenant)?, days).await?
            );
        }
        AuditCommand::VerifyExport { file, public_key } => {
            verify_export(&file, public_key.as_deref())?;
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PICKET_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::GenSecret) = cli.command {
        let secret: [u8; 48] =
            picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "{}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        );
        return Ok(());
    }
    if let Some(Command::Admin(AdminCommand::Audit {
        command: AuditCommand::VerifyExport { file, public_key },
    })) = &cli.command
    {
        return verify_export(file, public_key.as_deref());
    }
    // The file is optional when PICKET_* variables carry everything; a file named explicitly must exist.
    let explicit = std::env::args()
        .any(|a| a == "--config" || a == "-c" || a.starts_with("--config="))
        || std::env::var_os("PICKET_CONFIG").is_some();
    let config = ServerConfig::load(Some(&cli.config), explicit, &ProcessEnv)
        .context("invalid configuration")?;
    init_logging(config.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Some(Command::CheckConfig) => {
                picket_server::prepare(&config)?;
                picket_server::db::connect(&config.database_url).await?;
                println!(
                    "configuration OK: listen {}, database {}",
                    config.listen,
                    picket_server::config::redact_url(&config.database_url)
                );
                Ok(())
            }
            Some(Command::Admin(AdminCommand::RotateSigningKey { overlap_secs })) => {
                picket_server::prepare(&config)?;
                let db = picket_server::db::connect(&config.database_url).await?;
                let r = picket_server::keys::rotate_signing_key(
                    &db,
                    &config.master_secret,
                    overlap_secs,
                )
                .await?;
                println!("new job-signing key {}", r.current);
                println!(
                    "previous key {} is accepted by agents until {}",
                    r.previous,
                    picket_server::time::rfc3339(r.previous_valid_until)
                );
                println!("restart the server (every replica) to start signing with the new key");
                Ok(())
            }
            Some(Command::Admin(AdminCommand::RotateMasterSecret { new_secret_file })) => {
                rotate(&config, &new_secret_file).await
            }
            Some(Command::Admin(AdminCommand::Audit { command })) => {
                admin_audit(&config, command).await
            }
            _ => serve(config).await,
        }
    })
}

async fn rotate(config: &ServerConfig, new_secret_file: &std::path::Path) -> anyhow::Result<()> {
    use picket_shared::vault::{MasterKeys, MasterSecret};
    let text = picket_server::config::read_secret_file("--new-secret-file", new_secret_file)?;
    let new = picket_server::config::decode_master_secret("--new-secret-file", &text)?;
    if new.as_slice() == config.master_secret.as_slice() {
        anyhow::bail!("--new-secret-file holds the secret already in use; nothing to do");
    }
    let old = MasterKeys::derive(
        &MasterSecret::new(config.master_secret.to_vec()).context("current master secret")?,
    );
    let new = MasterKeys::derive(&MasterSecret::new(new.to_vec()).context("new master secret")?);
    picket_server::prepare(config)?;
    let db = picket_server::db::connect(&config.database_url).await?;
    let report = picket_server::service::rotation::rotate_master_secret(&db, &old, &new)
        .await
        .context("rotation failed; the database is unchanged and still uses the current secret")?;
    println!(
        "master secret rotated: {} tenant key(s) and {} signing key(s) re-wrapped. \
         Now replace the configured master secret with the new one and start the server; \
         the old secret no longer opens anything.",
        report.tenant_keys, report.signing_keys
    );
    Ok(())
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let running = picket_server::start(config, shutdown.clone()).await?;
    // Machine-readable line for scripts and tests that start the server on port 0.
    println!("picket-server listening on {}", running.addr);
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    running.task.await.context("server task")?
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
