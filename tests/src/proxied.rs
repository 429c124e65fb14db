//! Clients an app runs with a sidecar's proxy environment, each a real, independent program
//! that reads that environment itself: curl for HTTP and HTTPS, grpcio and grpc-go for gRPC;
//! and a raw CONNECT for TCP, as any proxy-aware client sends it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Exactly the environment the sidecar injector gives an app container, for a sidecar whose
/// outbound listener is `proxy`, expanded as the kubelet expands it (`$(VAR)` from the
/// downward API; the pod's address and the API server's stand in as loopback here).
pub fn injected_env(proxy: SocketAddr) -> Vec<(String, String)> {
    use edgexds::inject::mutate::{Decision, decide};
    let template = edgexds::inject::SidecarTemplate {
        image: "envoy".into(),
        resources: serde_json::json!({}),
        extra_args: vec![],
        xds_address: "edgexds.edgexds.svc:18000".into(),
        ca_pem: String::new(),
        token_audience: "edgexds".into(),
        outbound_listener: proxy,
        cluster_domain: "cluster.local".into(),
    };
    let mut pod = serde_json::json!({"metadata": {"name": "app", "namespace": "shop"},
                                     "spec": {"containers": [{"name": "app", "image": "app"}]}});
    let Ok(Decision::Inject(patch)) = decide(&serde_json::from_value(pod.clone()).expect("a pod"), &template) else {
        panic!("the pod is injected")
    };
    json_patch::patch(&mut pod, &patch).expect("the patch applies");
    let downward = [("$(EDGEXDS_POD_IP)", "127.0.0.1"), ("$(KUBERNETES_SERVICE_HOST)", "127.0.0.1")];
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            let value = e["value"].as_str()?;
            let value = downward.iter().fold(value.to_owned(), |v, (from, to)| v.replace(from, to));
            Some((e["name"].as_str()?.to_owned(), value))
        })
        .collect()
}

/// Runs `program` with exactly `env` (and `PATH`), returning its stdout; fails with its
/// stderr when it fails.
async fn run(program: &std::path::Path, args: &[&str], env: &[(String, String)]) -> Result<String> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear().stdin(Stdio::null()).kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .with_context(|| format!("{} timed out", program.display()))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("{} {args:?}: {}: {stdout}{}", program.display(), output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(stdout)
}

/// `curl url` with `env`: plain HTTP goes as an absolute-form request to `http_proxy`, HTTPS
/// through a CONNECT tunnel to `HTTPS_PROXY` (the upstream's certificate is self-signed, so
/// it is not verified; TLS still runs end to end). The body.
pub async fn curl(url: &str, env: &[(String, String)]) -> Result<String> {
    run(std::path::Path::new("curl"), &["-sS", "--fail", "--insecure", "--max-time", "10", url], env).await
}

/// One grpcio call of /test.Greeter/Who on `target` with `env`: the pod that answered.
pub async fn grpcio_who(target: &str, env: &[(String, String)]) -> Result<String> {
    grpcio_call(target, "/test.Greeter/Who", env).await
}

/// One grpcio call of `method` on `target` with `env` (an `xds:///` target and
/// `GRPC_XDS_BOOTSTRAP` make it proxyless): the pod that answered.
pub async fn grpcio_call(target: &str, method: &str, env: &[(String, String)]) -> Result<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/proxied_grpc.py");
    let script = script.to_str().context("a UTF-8 path")?.to_owned();
    Ok(run(&crate::traffic::python(), &[&script, target, method], env).await?.trim().to_owned())
}

/// One call of /test.Greeter/Who on `target` by a Go program built from
/// google.golang.org/grpc (`tests/grpc-go`, built by `tests/run`), which honours `HTTPS_PROXY`.
pub async fn grpc_go_who(target: &str, env: &[(String, String)]) -> Result<String> {
    let binary = match std::env::var_os("EDGEXDS_GRPC_GO_CLIENT") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/grpc-go-client"),
    };
    if !binary.is_file() {
        bail!(
            "no {}: tests/run builds it (cd tests/grpc-go && go build -o ../../target/grpc-go-client .)",
            binary.display()
        );
    }
    Ok(run(&binary, &[target], env).await?.trim().to_owned())
}

/// Opens a CONNECT tunnel to `target` through `proxy`: the stream past the proxy's answer, or
/// the proxy's status line and body when it refuses.
pub async fn connect(proxy: SocketAddr, target: &str) -> Result<std::result::Result<tokio::net::TcpStream, String>> {
    let mut stream = tokio::net::TcpStream::connect(proxy).await?;
    stream.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await?;
    // Read the answer's head byte by byte, so no tunnelled byte is taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await?? == 0 {
            bail!("the proxy closed during its answer: {}", String::from_utf8_lossy(&head));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        return Ok(Ok(stream));
    }
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut body)).await;
    Ok(Err(format!("{}{}", head.lines().next().unwrap_or_default(), String::from_utf8_lossy(&body))))
}

/// Sends `message` down a tunnel to an echo server and reads it back.
pub async fn echo(mut stream: tokio::net::TcpStream, message: &[u8]) -> Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut back = vec![0; message.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back)).await??;
    Ok(back)
}
