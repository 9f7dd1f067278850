//! `zeroservices-bench`: the workloads of `../shared/bench/WORKLOADS.md` (W1 request/reply, W2
//! event fan-out, W3 REST + realtime) on ZeroServices, beside a raw libzmq baseline and a
//! bare axum baseline measured in the same run. Every participant is its own OS process on
//! 127.0.0.1 and speaks the harness protocol (`BENCH_*` variables, JSON lines on stdout, stdin
//! `go` and close), so an external driver can run them beside other frameworks.
//!
//! ```text
//! cargo run --release -p zeroservices-bench -- run            # table
//! cargo run --release -p zeroservices-bench -- run --json     # table on stderr, JSON on stdout
//! cargo run --release -p zeroservices-bench -- run --quick    # tiny counts (smoke test)
//! cargo run --release -p zeroservices-bench -- mongo mongodb://127.0.0.1:27017/bench 2000
//! cargo run --release -p zeroservices-bench -- soak 300        # bounded soak (at most 600 s)
//! cargo run --release -p zeroservices-bench -- lists embedded 1000000
//! cargo run --release -p zeroservices-bench -- lists mongo mongodb://127.0.0.1:27017/bench 100000
//! ```

// A faster allocator: request handling allocates many small JSON values.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod driver;
mod lists;
mod mongo;
mod nats;
mod report;
mod soak;
mod stats;
mod w1;
mod w2;
mod w3;

use anyhow::bail;

fn usage() -> anyhow::Result<()> {
    bail!(
        "usage: zeroservices-bench run [--json] [--quick] | lists embedded [N] | lists mongo URI [N]\n\
         participants: w1-service|w1-client resource|core|raw; w2-pub|w2-sub framework|raw [N];\n\
         w3-server all|all-embedded|service|api|baseline; w3-load URL METHOD PATH CONNS WARM_S SECS STATUS; w3c-client"
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    if a.first() == Some(&"run") {
        return driver::run(a.contains(&"--json"), a.contains(&"--quick"));
    }
    if let ["soak", rest @ ..] = a.as_slice() {
        let secs = rest
            .first()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(300u64);
        return driver::soak(secs.min(600));
    }
    if let ["lists", which, rest @ ..] = a.as_slice() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return match (*which, rest) {
            ("embedded", rest) => {
                let n = rest.first().map(|n| n.parse()).transpose()?;
                rt.block_on(lists::embedded(n.unwrap_or(1_000_000)))
            }
            ("mongo", [uri, rest @ ..]) => {
                let n = rest.first().map(|n| n.parse()).transpose()?;
                rt.block_on(lists::mongo(uri, n.unwrap_or(100_000)))
            }
            _ => usage(),
        };
    }
    if let ["mongo", uri, rest @ ..] = a.as_slice() {
        let n = rest.first().map(|n| n.parse()).transpose()?.unwrap_or(2000);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(mongo::run(uri, n));
    }
    // W1 and W2 participants run on one thread, as their peers do (Node's event loop, the C
    // program); `BENCH_RUNTIME=multi` (or `current`) overrides it for any command.
    let single = a
        .first()
        .is_some_and(|c| c.starts_with("w1-") || c.starts_with("w2-"));
    let rt = match (std::env::var("BENCH_RUNTIME").as_deref(), single) {
        (Ok("current"), _) | (Err(_), true) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    rt.block_on(async {
        match a.as_slice() {
            ["w1-service", imp] => w1::service(imp).await,
            ["w1-client", imp] => w1::client(imp).await,
            ["w2-pub", imp] => w2::publisher(imp).await,
            ["w2-sub", imp, n] => w2::subscriber(imp, n.parse()?).await,
            ["w3-server", mode] => w3::server(mode).await,
            ["w3-load", url, method, path, conns, warm, secs, status] => {
                w3::load(
                    url,
                    method,
                    path,
                    conns.parse()?,
                    warm.parse()?,
                    secs.parse()?,
                    status.parse()?,
                )
                .await
            }
            ["w3c-client"] => w3::realtime_client().await,
            ["soak-worker"] => soak::worker().await,
            ["soak-load", addr, secs] => soak::load(addr.to_string(), secs.parse()?).await,
            _ => usage(),
        }
    })
}
