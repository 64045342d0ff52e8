//! The agent as a Windows service: `picket-agent service run`, started by the
//! service control manager (SCM) as installed by the MSI
//! (`installers/msi/picket-agent.wxs`).
//!
//! The SCM calls back on a thread of its own: we report `StartPending`, load
//! the configuration, report `Running` accepting Stop and Shutdown, run the
//! same [`crate::run_agent`] as the systemd service, and turn Stop or
//! Shutdown into the agent's cancellation token, so a job in progress ends
//! as it does on SIGTERM. The exit code reported on `Stopped` is 0, or
//! service-specific 3 when the server revoked this agent (as on Linux), or 1.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use crate::config::AgentConfig;

/// The service name the MSI installs (`ServiceInstall/@Name`).
pub const SERVICE_NAME: &str = "picket-agent";

/// The configuration file given on the service's command line; set once
/// before the dispatcher starts (the SCM callback takes no arguments of ours).
static CONFIG_PATH: OnceLock<PathBuf> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Hands this process to the SCM; returns when the service has stopped.
///
/// # Errors
/// If the process was not started by the SCM (run `picket-agent run` in a
/// console instead), or the dispatcher fails.
pub fn run_under_scm(config_path: PathBuf) -> anyhow::Result<()> {
    let _ = CONFIG_PATH.set(config_path);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "cannot connect to the Windows service control manager: `service run` is started by \
         the service `picket-agent`; in a console use `picket-agent run`",
    )
}

fn service_main(_args: Vec<OsString>) {
    if let Err(e) = run_service() {
        tracing::error!(error = %format!("{e:#}"), "the service stopped with an error");
    }
}

fn status(state: ServiceState, accept: ServiceControlAccept, exit: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        },
        checkpoint: 0,
        // Start: load config and build the runtime. Stop: a job in progress
        // gets siem_timeout + 5 s (as TimeoutStopSec in the systemd unit).
        wait_hint: Duration::from_secs(60),
        process_id: None,
    }
}

fn run_service() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handler = move |event| match event {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            tracing::info!("stop requested by the service control manager; shutting down");
            stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)
        .context("cannot register the service control handler")?;
    handle.set_service_status(status(
        ServiceState::StartPending,
        ServiceControlAccept::empty(),
        0,
    ))?;
    let result = (|| {
        let path = CONFIG_PATH
            .get()
            .context("internal: the configuration path was not set")?;
        // The first event of each start in the Event Log: which binary and configuration.
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %path.display(),
            "the service is starting"
        );
        let config = AgentConfig::load(path)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        handle.set_service_status(status(
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            0,
        ))?;
        runtime.block_on(crate::run_agent(config, shutdown))
    })();
    let exit = match &result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<crate::Revoked>().is_some() => 3,
        Err(_) => 1,
    };
    handle.set_service_status(status(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit,
    ))?;
    result
}
