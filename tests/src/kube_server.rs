//! A real kube-apiserver and etcd for the tests, built from their Go modules by `tests/k8s/build`.
//!
//! Started envtest-style on free loopback ports: RBAC authorization, a generated CA that signs
//! the serving certificate and an admin client certificate (group `system:masters`), generated
//! service-account signing keys, and our HealthProbe CRD applied and Established. The real
//! kube-controller-manager (EndpointSlice, Deployment, ReplicaSet and garbage-collector
//! controllers) and kube-scheduler run beside it; pods run on the test kubelet
//! ([`crate::kubelet`]).
//!
//! [`KubeServer::shared`] starts one server per test binary, shared by its tests; each test
//! takes a fresh namespace. The processes run under a small shell supervisor that reads its
//! stdin: when the test process ends, for whatever reason, the pipe closes and the supervisor
//! stops the server and removes its data, so nothing outlives the tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::supervised::Supervised;

/// How long a fresh kube-apiserver may take to answer `/readyz` on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(90);

/// The binaries; built (or found in the build cache) on first use.
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    /// The Gateway API CRDs (HTTPRoute, GRPCRoute) every test cluster has.
    pub gateway_crds: PathBuf,
}

impl Binaries {
    /// `$EDGEXDS_KUBE_BIN` as set by `tests/run`, or else `tests/k8s/build` (cached, instant when warm).
    /// A missing or failing build is an error, never a skip.
    pub fn get() -> Result<&'static Binaries> {
        static BINARIES: OnceLock<std::result::Result<Binaries, String>> = OnceLock::new();
        BINARIES
            .get_or_init(|| Self::locate().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn locate() -> Result<Binaries> {
        let dir = cached("EDGEXDS_KUBE_BIN", "k8s/build", "the real kube-apiserver could not be built")?;
        let gateway_crds = cached("EDGEXDS_GATEWAY_CRDS", "gateway/crds", "the Gateway API CRDs could not be fetched")?;
        let binaries = Binaries {
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kube_scheduler: dir.join("kube-scheduler"),
            etcd: dir.join("etcd"),
            kubectl: dir.join("kubectl"),
            gateway_crds,
        };
        for path in [
            &binaries.kube_apiserver,
            &binaries.kube_controller_manager,
            &binaries.kube_scheduler,
            &binaries.etcd,
            &binaries.kubectl,
        ] {
            if !path.is_file() {
                bail!("{} is missing; tests/k8s/build builds it", path.display());
            }
        }
        Ok(binaries)
    }
}

/// The directory `$variable` names (as `tests/run` sets it), or else what `script` (cached,
/// instant when warm) prints.
fn cached(variable: &str, script: &str, failure: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(variable) {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed: {failure}", script.display());
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The certificates and keys a server and its clients need, written into `dir`.
struct Pki {
    ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
}

impl Pki {
    fn generate(dir: &Path) -> Result<Self> {
        let ca = crate::pki::TestCa::new("edgexds-test-ca")?;
        let serving = ca.server(dir, "serving")?;
        // The API server takes the certificate's organization as the group.
        let admin = ca.client_in_group(dir, "edgexds-test-admin", "system:masters")?;
        let service_account_key = rcgen::KeyPair::generate()?;
        let write = |name: &str, pem: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(Self {
            ca: ca.write(&dir.join("ca.crt"))?,
            serving_cert: serving.cert,
            serving_key: serving.key,
            admin_cert: admin.cert,
            admin_key: admin.key,
            service_account_key: write("service-account.key", service_account_key.serialize_pem())?,
            service_account_public_key: write("service-account.pub", service_account_key.public_key_pem())?,
        })
    }
}

/// A running kube-apiserver with its etcd.
pub struct KubeServer {
    pub url: String,
    pub etcd_url: String,
    /// A kubeconfig for the admin client certificate, usable by kubectl and edgexds alike.
    pub admin_kubeconfig: PathBuf,
    /// Where the API server, etcd and the controllers write their logs.
    pub dir: PathBuf,
    ca: PathBuf,
    apiserver_args: Vec<String>,
    apiserver: Mutex<Supervised>,
    /// More API servers on the same etcd, as in a highly available control plane.
    replicas: Mutex<Vec<Supervised>>,
    etcd: Mutex<Supervised>,
    /// kube-controller-manager and kube-scheduler.
    controllers: Mutex<Vec<Supervised>>,
    namespaces: AtomicU32,
}

impl KubeServer {
    /// The server shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static KubeServer {
        static SHARED: OnceLock<KubeServer> = OnceLock::new();
        SHARED.get_or_init(|| KubeServer::start().unwrap_or_else(|e| panic!("real kube-apiserver: {e:#}")))
    }

    /// A server of its own, for tests that stop it or compact its etcd.
    pub fn start() -> Result<Self> {
        let binaries = Binaries::get()?;
        let dir = std::env::temp_dir().join(format!(
            "edgexds-kube-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
        ));
        std::fs::create_dir_all(dir.join("certs"))?;
        let pki = Pki::generate(&dir)?;

        let (etcd_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            // A test server's data is disposable; fsync only slows the suite down.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        let etcd = Supervised::spawn(&binaries.etcd, &etcd_args, &dir.join("etcd.log"), Some(&dir))?;

        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca.display()),
            format!("--secure-port={secure_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // Loopback cannot be the kubernetes Service endpoint; nothing here needs that endpoint.
            "--endpoint-reconciler-type=none".into(),
            "--authorization-mode=RBAC".into(),
            // Webhooks are called at a Service's endpoint (a pod's own address on the test
            // kubelet), as no ClusterIP is routed here.
            "--enable-aggregator-routing=true".into(),
            format!("--service-account-key-file={}", pki.service_account_public_key.display()),
            format!("--service-account-signing-key-file={}", pki.service_account_key.display()),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.0.0.0/16".into(),
            // No controller-manager creates the default ServiceAccounts this plugin insists on.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
        ];
        let apiserver = Supervised::spawn(&binaries.kube_apiserver, &apiserver_args, &dir.join("apiserver.log"), None)?;

        let url = format!("https://127.0.0.1:{secure_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &admin_kubeconfig,
            kubeconfig(&url, &pki.ca, json!({"client-certificate": pki.admin_cert, "client-key": pki.admin_key})),
        )?;
        let server = KubeServer {
            url,
            etcd_url,
            admin_kubeconfig,
            ca: pki.ca,
            dir,
            apiserver_args,
            apiserver: Mutex::new(apiserver),
            replicas: Mutex::new(Vec::new()),
            etcd: Mutex::new(etcd),
            controllers: Mutex::new(Vec::new()),
            namespaces: AtomicU32::new(0),
        };
        server.wait_ready(&server.admin_kubeconfig)?;
        server.start_controllers()?;
        let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/healthprobes.edgexds.io.yaml");
        server.kubectl(&["apply", "--server-side", "-f", &crd.display().to_string()])?;
        // Gateway API's route CRDs, as a cluster with Gateway API installed has them.
        server.kubectl(&["apply", "--server-side", "-f", &Binaries::get()?.gateway_crds.display().to_string()])?;
        for crd in [
            "crd/healthprobes.edgexds.io",
            "crd/httproutes.gateway.networking.k8s.io",
            "crd/grpcroutes.gateway.networking.k8s.io",
        ] {
            server.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", crd])?;
        }
        Ok(server)
    }

    /// The controllers a cluster's Services and workloads need: the EndpointSlice controller
    /// writes every slice of a Service with a selector, Deployments roll through ReplicaSets,
    /// the garbage collector removes what their owners left, and the scheduler binds Pods to
    /// the test kubelet's Nodes. Nothing else runs: no node lifecycle (the test kubelet lifts
    /// its Nodes' not-ready taint itself), no ServiceAccount tokens controller.
    fn start_controllers(&self) -> Result<()> {
        let binaries = Binaries::get()?;
        let kubeconfig = format!("--kubeconfig={}", self.admin_kubeconfig.display());
        let manager = vec![
            kubeconfig.clone(),
            "--leader-elect=false".into(),
            "--controllers=endpointslice-controller,endpoints-controller,deployment-controller,replicaset-controller,garbage-collector-controller".into(),
            "--secure-port=0".into(),
            "--use-service-account-credentials=false".into(),
            // A test scales to hundreds of pods at once; the default 20 requests a second
            // would make that a minute.
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
        ];
        let scheduler = vec![
            kubeconfig,
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
        ];
        let mut controllers = self.controllers.lock().unwrap_or_else(|e| e.into_inner());
        let log = |name: &str| self.dir.join(format!("{name}.log"));
        controllers.push(Supervised::spawn(
            &binaries.kube_controller_manager,
            &manager,
            &log("controller-manager"),
            None,
        )?);
        controllers.push(Supervised::spawn(&binaries.kube_scheduler, &scheduler, &log("scheduler"), None)?);
        Ok(())
    }

    fn wait_ready(&self, kubeconfig: &Path) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            let exited = self.apiserver.lock().unwrap_or_else(|e| e.into_inner()).exited()
                || self.etcd.lock().unwrap_or_else(|e| e.into_inner()).exited();
            match self.kubectl_as(kubeconfig, &["get", "--raw", "/readyz"]) {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                _ if exited => bail!(
                    "kube-apiserver or etcd exited; their logs:\n{}\n{}",
                    self.log_tail("apiserver.log"),
                    self.log_tail("etcd.log")
                ),
                _ if Instant::now() > deadline => {
                    bail!("kube-apiserver not ready within {STARTUP:?}; its log:\n{}", self.log_tail("apiserver.log"))
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// The last lines of one of the servers' logs, for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs the real kubectl as the admin; its stdout, or an error holding its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.admin_kubeconfig, args)
    }

    /// Runs kubectl with `kubeconfig`, as an operator would.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Result<String> {
        let output = Command::new(&Binaries::get()?.kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Stops kube-apiserver (etcd keeps running): an API server outage.
    pub fn stop_apiserver(&self) {
        self.apiserver.lock().unwrap_or_else(|e| e.into_inner()).stop();
    }

    /// Starts kube-apiserver again with the same flags and data, and waits until it is ready.
    pub fn restart_apiserver(&self) -> Result<()> {
        let binaries = Binaries::get()?;
        let mut apiserver = self.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        apiserver.stop();
        let log = self.dir.join("apiserver-restarted.log");
        *apiserver = Supervised::spawn(&binaries.kube_apiserver, &self.apiserver_args, &log, None)?;
        drop(apiserver);
        self.wait_ready(&self.admin_kubeconfig)
    }

    /// Starts one more kube-apiserver on the same etcd, for changes made while the first is
    /// down; returns an admin kubeconfig for it.
    pub fn start_replica(&self) -> Result<PathBuf> {
        let binaries = Binaries::get()?;
        let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        let index = replicas.len() + 1;
        let port = free_port()?;
        let args: Vec<String> = self
            .apiserver_args
            .iter()
            .map(|arg| if arg.starts_with("--secure-port=") { format!("--secure-port={port}") } else { arg.clone() })
            .collect();
        let log = self.dir.join(format!("apiserver-replica-{index}.log"));
        replicas.push(Supervised::spawn(&binaries.kube_apiserver, &args, &log, None)?);
        drop(replicas);
        let admin =
            std::fs::read_to_string(&self.admin_kubeconfig)?.replace(&self.url, &format!("https://127.0.0.1:{port}"));
        let kubeconfig = self.dir.join(format!("admin-replica-{index}.kubeconfig"));
        std::fs::write(&kubeconfig, admin)?;
        self.wait_ready(&kubeconfig)?;
        Ok(kubeconfig)
    }

    /// Compacts etcd's history up to its current revision, through etcd's JSON gateway.
    pub async fn compact_etcd(&self) -> Result<i64> {
        let post = |path: &str, body: Value| {
            let url = format!("{}{path}", self.etcd_url);
            async move {
                let reply = crate::http::post(&url, &body.to_string()).await?;
                if reply.status != 200 {
                    bail!("etcd {url}: {} {}", reply.status, reply.body);
                }
                Ok(serde_json::from_str::<Value>(&reply.body)?)
            }
        };
        // Any key will do: every answer carries the store's current revision.
        let range = post("/v3/kv/range", json!({"key": "AA=="})).await?;
        let revision: i64 =
            range["header"]["revision"].as_str().and_then(|r| r.parse().ok()).context("etcd returned no revision")?;
        post("/v3/kv/compaction", json!({"revision": revision.to_string(), "physical": true})).await?;
        Ok(revision)
    }

    /// An admin client, bound to the calling test's runtime.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        client_from(&self.admin_kubeconfig).await
    }

    /// A fresh namespace of a given name (a test with a fixed bootstrap needs `shop`).
    pub async fn named_namespace(&self, client: &kube::Client, name: &str) -> Result<()> {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
        Ok(())
    }

    /// A fresh namespace, unique within this server.
    pub async fn namespace(&self, client: &kube::Client) -> Result<String> {
        let name = format!("t{}", self.namespaces.fetch_add(1, Ordering::Relaxed));
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
        Ok(name)
    }

    /// Creates ServiceAccount `namespace/name` if it is missing and asks the TokenRequest API for a
    /// token for `audiences` (the API server's own when empty); writes a kubeconfig that uses it.
    pub async fn service_account_kubeconfig(
        &self,
        admin: &kube::Client,
        namespace: &str,
        name: &str,
        audiences: &[&str],
    ) -> Result<PathBuf> {
        let token = self.token(admin, namespace, name, audiences, None).await?;
        let path = self.dir.join(format!("{namespace}-{name}-{}.kubeconfig", self.namespaces.load(Ordering::Relaxed)));
        std::fs::write(&path, kubeconfig(&self.url, &self.ca, json!({"token": token})))?;
        Ok(path)
    }

    /// A token for ServiceAccount `namespace/name` (created if missing) from the TokenRequest
    /// API, for `audiences` (the API server's own when empty), valid for an hour, and bound to
    /// `pod` when given (it stops working when the pod is deleted).
    pub async fn token(
        &self,
        admin: &kube::Client,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        pod: Option<&Pod>,
    ) -> Result<String> {
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let bound = pod.map(|pod| BoundObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
        });
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                bound_object_ref: bound,
                expiration_seconds: Some(3600),
            },
            ..Default::default()
        };
        let token = accounts.create_token_request(name, &PostParams::default(), &request).await?;
        Ok(token.status.context("TokenRequest returned no status")?.token)
    }

    /// A ServiceAccount token signed with the server's own signing key, carrying `claims`:
    /// for tokens the TokenRequest API will not issue, such as expired ones.
    pub fn forge_token(&self, claims: &Value) -> Result<String> {
        use base64::Engine;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pem = std::fs::read_to_string(self.dir.join("service-account.key"))?;
        let der = rcgen::KeyPair::from_pem(&pem)?.serialize_der();
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| anyhow::anyhow!("service-account key: {e}"))?;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let signed = format!("{}.{}", encode(br#"{"alg":"ES256","typ":"JWT"}"#), encode(claims.to_string().as_bytes()));
        let signature = key.sign(&rng, signed.as_bytes()).map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        Ok(format!("{signed}.{}", encode(signature.as_ref())))
    }

    /// A client for ServiceAccount `namespace/name`, with a token from the TokenRequest API.
    pub async fn service_account_client(
        &self,
        admin: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client> {
        let path = self.service_account_kubeconfig(admin, namespace, name, &[]).await?;
        client_from(&path).await
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        for controller in self.controllers.get_mut().unwrap_or_else(|e| e.into_inner()) {
            controller.stop();
        }
        self.apiserver.get_mut().unwrap_or_else(|e| e.into_inner()).stop();
        for replica in self.replicas.get_mut().unwrap_or_else(|e| e.into_inner()) {
            replica.stop();
        }
        self.etcd.get_mut().unwrap_or_else(|e| e.into_inner()).stop();
    }
}

fn kubeconfig(url: &str, ca: &Path, user: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority": ca}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "users": [{"name": "test", "user": user}],
    })
    .to_string()
}

/// A client from a kubeconfig file, bound to the calling test's runtime.
pub async fn client_from(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The API resource of a test object, from its `apiVersion` and `kind`.
pub fn resource_of(object: &Value) -> ApiResource {
    let (group, version) = match object["apiVersion"].as_str().unwrap_or_default().split_once('/') {
        Some((group, version)) => (group.to_owned(), version.to_owned()),
        None => (String::new(), object["apiVersion"].as_str().unwrap_or_default().to_owned()),
    };
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let plural = match kind.as_str() {
        "EndpointSlice" => "endpointslices".to_owned(),
        other => format!("{}s", other.to_lowercase()),
    };
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    ApiResource { group, version, api_version, kind, plural }
}

/// Creates or replaces a test object (from [`crate::kube_objects`]) by server-side apply.
pub async fn apply(client: &kube::Client, object: &Value) -> Result<DynamicObject> {
    let resource = resource_of(object);
    let namespace = object["metadata"]["namespace"].as_str().context("object without a namespace")?;
    let name = object["metadata"]["name"].as_str().context("object without a name")?;
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
    let params = PatchParams::apply("edgexds-tests").force();
    Ok(api.patch(name, &params, &Patch::Apply(object)).await?)
}

/// The API of a test object kind: "Service", "EndpointSlice" or "HealthProbe".
fn api_of(client: &kube::Client, kind: &str, namespace: &str) -> Api<DynamicObject> {
    let api_version = match kind {
        "Service" | "Pod" | "Node" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "Deployment" => "apps/v1",
        "HTTPRoute" | "GRPCRoute" => "gateway.networking.k8s.io/v1",
        _ => "edgexds.io/v1alpha1",
    };
    let resource = resource_of(&json!({"apiVersion": api_version, "kind": kind}));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Deletes a test object of `kind`.
pub async fn delete(client: &kube::Client, kind: &str, namespace: &str, name: &str) -> Result<()> {
    api_of(client, kind, namespace).delete(name, &Default::default()).await?;
    Ok(())
}

/// Reads a test object as JSON; `None` when it does not exist.
pub async fn get(client: &kube::Client, kind: &str, namespace: &str, name: &str) -> Result<Option<Value>> {
    Ok(api_of(client, kind, namespace).get_opt(name).await?.map(serde_json::to_value).transpose()?)
}
