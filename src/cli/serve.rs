//! `iotpipe serve`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::app::TokenSource;
use crate::config::{self, Config};
use crate::ingress::auth::Credentials;
use crate::sign::SignMethod;
use crate::App;

/// Prints to stdout, ignoring a closed pipe: losing the banner must not kill the server.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Shutdown must finish within 5 s; leave room for the process to exit.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(4500);

pub(super) fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    init_tracing();
    keep_large_allocations_mapped();
    // Loaded on a thread of its own: the allocator gives each thread its own arena, so the parse
    // trees (about 3 KiB per configured device, all freed again) do not leave holes between
    // the registry's and the runtime's allocations, and `release_freed_memory` can hand them
    // back whole once the configuration is dropped.
    let loaded = std::thread::scope(|s| {
        s.spawn(|| match config_path {
            Some(path) => config::load_file(path).map(|c| (c, false)),
            None => config::load_str(config::DEMO_CONFIG, "<embedded demo config>").map(|c| (c, true)),
        })
        .join()
    });
    let (config, demo) = match loaded {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("iotpipe");
    // One worker per core less one, which the store's writer thread keeps busy: on two cores a
    // second worker cost a cross-thread wake-up per message (docs/benchmarks.md). The runtime's
    // own TOKIO_WORKER_THREADS still decides when set.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        builder.worker_threads(cores.saturating_sub(1).max(1));
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
    runtime.block_on(serve(config, config_path, demo))
}

async fn serve(config: Config, config_path: Option<&Path>, demo: bool) -> anyhow::Result<()> {
    // Handlers go in before anything listens, so a signal right after start-up is not fatal.
    let signal = shutdown_signal()?;
    let app = match App::start(&config).await {
        Ok(app) => app,
        Err(e) => match e.listen_key(&config) {
            // Where the address came from, as a configuration problem is reported.
            Some(key) => anyhow::bail!("{}: {key}: {e}", where_written(config_path, key)),
            None => return Err(e.into()),
        },
    };
    // The components hold what they need (the file's devices live on in the registry). Dropped
    // before the banner, which tells whoever started the server that it is ready.
    let data_dir = config.storage.dir.clone();
    let demo_lines = demo.then(|| demo_credentials(&config, app.mqtt_addr().port()));
    drop(config);
    release_freed_memory();
    say!("iotpipe {} serving", env!("CARGO_PKG_VERSION"));
    say!("  MQTT      {}", app.mqtt_addr());
    if let Some(tls) = app.mqtt_tls_addr() {
        say!("  MQTT+TLS  {tls}");
    }
    say!("  AMQP      {}", app.amqp_addr());
    if let Some(tls) = app.amqp_tls_addr() {
        say!("  AMQP+TLS  {tls}");
    }
    say!("  HTTP      {}", app.http_addr());
    say!("  data      {}", data_dir.display());
    // The token goes to stdout once, on the start that made it; never to the log.
    match app.admin_token_source() {
        TokenSource::Configured => {}
        TokenSource::Stored(path) => {
            say!("  API token in {} ([http] admin_token is not set)", path.display())
        }
        TokenSource::Generated(path) => say!(
            "  API token {} (generated, stored in {}; shown only this once)",
            app.admin_token(),
            path.display()
        ),
    }
    for line in demo_lines.into_iter().flatten() {
        say!("{line}");
    }
    signal.await;
    tracing::info!("Shutting down");
    app.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}

/// Keeps glibc's threshold for giving an allocation a mapping of its own at its starting value
/// (128 KiB). glibc raises it each time such a mapping is freed, as loading a large
/// configuration does; rumqttd's tables, sized by `[mqtt] max_connections` and mostly never
/// used, then come from the heap, where the parse had touched the pages: 11 MiB resident for
/// nothing with 10,000 configured devices (idle benchmark, docs/benchmarks.md). In a mapping of
/// their own they cost only what is used.
fn keep_large_allocations_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it takes the allocator's lock and has no
    // preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Hands the memory freed while starting back to the system: glibc keeps freed memory in the
/// process, and the configuration's arena is all free once the configuration is dropped
/// (13 MiB with 10,000 configured devices; idle benchmark, docs/benchmarks.md).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the kernel; it
    // takes the arenas' locks and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `file:line` of `key`, or the file alone when the key is defaulted.
fn where_written(config_path: Option<&Path>, key: &str) -> String {
    let Some(path) = config_path else {
        return "<embedded demo config>".to_string();
    };
    let line = std::fs::read_to_string(path).ok().and_then(|text| config::line_of(&text, key));
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => format!("{} (default)", path.display()),
    }
}

/// The demo configuration's devices and access keys, as lines to print.
fn demo_credentials(config: &Config, port: u16) -> Vec<String> {
    let mut lines = vec!["Demo configuration (run with --config FILE for your own):".to_string()];
    for product in &config.products {
        for device in &product.devices {
            let c = Credentials {
                client_id: device.name.clone(),
                product_key: product.key.clone(),
                device_name: device.name.clone(),
                method: SignMethod::HmacSha256,
                timestamp: None,
            };
            lines.push(format!(
                "  device {}/{}: mosquitto_pub -p {port} -i '{}' -u '{}' -P '{}' -q 1 -t '/{}/{}/user/update' -m '{{\"temperature\":40}}'",
                product.key,
                device.name,
                c.mqtt_client_id(),
                c.username(),
                c.password(&device.secret),
                product.key,
                device.name,
            ));
        }
    }
    for key in &config.access_keys {
        lines.push(format!("  AMQP access key: id {} secret {}", key.id, key.secret));
    }
    lines
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// A future that resolves on SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
