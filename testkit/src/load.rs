//! Continuous client load over a changing set of endpoints: writers put unique values to one
//! register key (checked for linearizability) and unique log keys (checked for durability);
//! readers issue linearizable gets of the register, round-robin over every endpoint.
//!
//! Like an etcd client's balancer, a task that cannot reach an endpoint (the connection is
//! refused: the request never left) takes the next one and avoids that endpoint for a moment;
//! such attempts are counted apart (`unreachable`) and never enter the history. A request that
//! may have reached a member and got no answer is a failed (indeterminate) operation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checkers::register::{History, Op};

/// The register every writer and reader uses.
pub const REGISTER: &str = "register";
/// Prefix of the durability log keys.
pub const LOG_PREFIX: &str = "log/";
/// How long one operation may take, unless [`LoadOptions::op_timeout`] says otherwise.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a task avoids an endpoint it could not reach.
const AVOID: Duration = Duration::from_millis(500);

/// How the load connects.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// TLS for https:// endpoints (CA, client certificate).
    pub tls: Option<etcd_client::TlsOptions>,
    /// Each task drops its connections and dials again every this many operations (0: never),
    /// so TLS handshakes keep happening (certificate rotation tests).
    pub reconnect_every: usize,
    /// How long one operation may take before the client gives up on it (default 3 s). Above
    /// a member's request timeout (7 s), every failure is the cluster's answer, not the client's
    /// impatience.
    pub op_timeout: Option<Duration>,
}

impl LoadOptions {
    fn op_timeout(&self) -> Duration {
        self.op_timeout.unwrap_or(OP_TIMEOUT)
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    failed_writes: Arc<AtomicUsize>,
    unreachable: Arc<AtomicUsize>,
    errors: Errors,
    endpoints: Arc<Mutex<Vec<String>>>,
    history: History,
    acked_logs: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the load recorded.
pub struct Recorded {
    /// Register operations (failed writes are indeterminate: `res == None`).
    pub history: Vec<Op>,
    /// Log keys whose put was acknowledged.
    pub acked_logs: Vec<String>,
    /// Operations that may have reached a member and failed or timed out.
    pub failed: usize,
    /// Of those, writes (register and log keys): their outcome is unknown to the client.
    pub failed_writes: usize,
    /// Attempts that could not reach their endpoint (not sent; tried on another one).
    pub unreachable: usize,
    /// The first few distinct errors of failed operations (for the report).
    pub errors: Vec<String>,
}

/// Distinct error texts of failed operations, the first [`MAX_ERRORS`].
type Errors = Arc<Mutex<Vec<String>>>;
const MAX_ERRORS: usize = 8;

fn note_error(errors: &Errors, e: String) {
    let mut v = errors.lock().unwrap();
    if v.len() < MAX_ERRORS && !v.contains(&e) {
        v.push(e);
    }
}

impl Recorded {
    /// Acknowledged register writes.
    pub fn acked_writes(&self) -> usize {
        acked_writes(&self.history)
    }

    /// Register reads (every recorded read was answered).
    pub fn reads(&self) -> usize {
        self.history.iter().filter(|o| !o.write).count()
    }

    /// Acknowledged log writes missing from the cluster, read linearizably through `endpoint`.
    pub async fn lost_writes(&self, endpoint: &str) -> Vec<String> {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect");
        self.lost_writes_via(&mut c).await
    }

    /// Acknowledged log writes missing from the cluster, read linearizably through `c`.
    pub async fn lost_writes_via(&self, c: &mut etcd_client::Client) -> Vec<String> {
        let got = c
            .get(
                LOG_PREFIX,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .expect("read the log keys");
        let present: std::collections::HashSet<String> = got
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap_or_default().to_string())
            .collect();
        self.acked_logs
            .iter()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect()
    }
}

struct Clients {
    by_endpoint: HashMap<String, etcd_client::Client>,
    options: LoadOptions,
    ops: usize,
    /// Endpoints this task could not reach, until when it leaves them alone.
    avoided: HashMap<String, Instant>,
}

/// True for an error that shows the request never reached the member: the connection could
/// not be made (refused, nothing listening, its name does not resolve), or the member refused
/// the stream unprocessed.
fn not_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(s) => {
            let text = format!("{s:?}");
            if refused_by_go_away(s) {
                return true;
            }
            // hyper answers `Canceled: connection closed` only for a request still queued for
            // a connection that closed (its dispatch envelope dropped untaken): never written.
            // gRPC clients retry such requests transparently.
            if s.code() == tonic::Code::Cancelled {
                return text.contains("hyper::Error(Canceled, \"connection closed\")");
            }
            if s.code() != tonic::Code::Unavailable {
                return false;
            }
            // tonic wraps every failure of the TCP connect or the TLS handshake (refused, reset,
            // closed mid-handshake by a member that is stopping) in `ConnectError`: the request
            // was queued for a connection that never came up, so it never left.
            if connect_failed(s) {
                return true;
            }
            text
        }
        etcd_client::Error::TransportError(t) => format!("{t:?}"),
        _ => return false,
    };
    // HTTP/2 REFUSED_STREAM: the server closed the connection before processing the stream.
    text.contains("Connection refused")
        || text.contains("error trying to connect")
        || text.contains("refused stream")
        || text.contains("REFUSED_STREAM")
        // The name of a member whose pod is gone does not resolve.
        || text.contains("dns error")
        // The member closed the connection before the TLS handshake finished.
        || text.contains("tls handshake eof")
}

/// True if `status` came from tonic's connector: the connection was never established.
fn connect_failed(status: &tonic::Status) -> bool {
    causes(status).any(|e| e.is::<tonic::ConnectError>())
}

/// True if the stream failed on the member's graceful GOAWAY (reason NO_ERROR). h2 gives a
/// stream that error in two cases only, and in both the member's server never saw it: the stream
/// was numbered above the GOAWAY's last processed stream (RFC 9113 §6.8: "not processed", safe to
/// retry), or it was opened after the GOAWAY arrived and never left. Streams the member did
/// process end normally, or with a broken pipe if the connection drops first. A GOAWAY with an
/// error reason is not covered: h2 then fails every stream, processed or not.
fn refused_by_go_away(status: &tonic::Status) -> bool {
    causes(status).any(|e| {
        e.downcast_ref::<h2::Error>().is_some_and(|h| {
            h.is_go_away() && h.is_remote() && h.reason() == Some(h2::Reason::NO_ERROR)
        })
    })
}

/// `status`'s chain of sources, nearest first.
fn causes(status: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |e| e.source())
}

impl Clients {
    fn new(options: LoadOptions) -> Self {
        Clients {
            by_endpoint: HashMap::new(),
            options,
            ops: 0,
            avoided: HashMap::new(),
        }
    }

    /// Endpoint number `n` in turn, passing over those avoided (unless all are).
    fn pick(&mut self, eps: &Mutex<Vec<String>>, n: usize) -> String {
        let e = eps.lock().unwrap().clone();
        let now = Instant::now();
        self.avoided.retain(|_, until| *until > now);
        (0..e.len())
            .map(|i| &e[(n + i) % e.len()])
            .find(|ep| !self.avoided.contains_key(*ep))
            .unwrap_or(&e[n % e.len()])
            .clone()
    }

    /// Leaves `ep` alone for a moment, and drops its connection. Async: when every endpoint
    /// is avoided, the next attempt is not made at once.
    async fn avoid(&mut self, ep: &str) {
        self.avoided.insert(ep.to_string(), Instant::now() + AVOID);
        self.by_endpoint.remove(ep);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    async fn get(&mut self, ep: &str) -> Option<&mut etcd_client::Client> {
        self.ops += 1;
        let every = self.options.reconnect_every;
        if every > 0 && self.ops.is_multiple_of(every) {
            self.by_endpoint.clear();
        }
        if !self.by_endpoint.contains_key(ep) {
            let mut opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(self.options.op_timeout());
            if let Some(tls) = &self.options.tls {
                opts = opts.with_tls(tls.clone());
            }
            let c = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect([ep], Some(opts)),
            )
            .await
            .ok()?
            .ok()?;
            self.by_endpoint.insert(ep.to_string(), c);
        }
        self.by_endpoint.get_mut(ep)
    }
}

fn acked_writes(ops: &[Op]) -> usize {
    ops.iter().filter(|o| o.write && o.res.is_some()).count()
}

impl Load {
    /// Starts `writers` writer tasks and `readers` reader tasks over `endpoints`. [`REGISTER`]
    /// must already hold a value (the one the history is checked from).
    pub fn start(endpoints: Vec<String>, writers: usize, readers: usize) -> Load {
        Self::start_with(endpoints, writers, readers, LoadOptions::default())
    }

    /// [`Load::start`], connecting as `options` say.
    pub fn start_with(
        endpoints: Vec<String>,
        writers: usize,
        readers: usize,
        options: LoadOptions,
    ) -> Load {
        let mut l = Load {
            stop: Arc::default(),
            failed: Arc::default(),
            failed_writes: Arc::default(),
            unreachable: Arc::default(),
            errors: Arc::default(),
            endpoints: Arc::new(Mutex::new(endpoints)),
            history: History::new(),
            acked_logs: Arc::default(),
            tasks: Vec::new(),
        };
        for w in 0..writers {
            let (stop, eps, h, logs, failed, failed_writes, unreachable) = (
                l.stop.clone(),
                l.endpoints.clone(),
                l.history.clone(),
                l.acked_logs.clone(),
                l.failed.clone(),
                l.failed_writes.clone(),
                l.unreachable.clone(),
            );
            let errors = l.errors.clone();
            let mut clients = Clients::new(options.clone());
            let op_timeout = options.op_timeout();
            l.tasks.push(tokio::spawn(async move {
                let mut seq: usize = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let ep = clients.pick(&eps, seq + w);
                    let register = seq.is_multiple_of(2);
                    let (key, value) = if register {
                        (REGISTER.to_string(), format!("w{w}-{seq}"))
                    } else {
                        (format!("{LOG_PREFIX}{w}/{seq}"), "x".to_string())
                    };
                    let inv = h.now();
                    let result = match clients.get(&ep).await {
                        Some(c) => {
                            tokio::time::timeout(
                                op_timeout,
                                c.put(key.clone(), value.clone(), None),
                            )
                            .await
                        }
                        None => {
                            unreachable.fetch_add(1, Ordering::Relaxed);
                            clients.avoid(&ep).await;
                            continue;
                        }
                    };
                    if matches!(&result, Ok(Err(e)) if not_sent(e)) {
                        unreachable.fetch_add(1, Ordering::Relaxed);
                        clients.avoid(&ep).await;
                        continue;
                    }
                    match &result {
                        Ok(Err(e)) => note_error(&errors, format!("put via {ep}: {e:?}")),
                        Err(_) => note_error(
                            &errors,
                            format!("put via {ep}: no answer in {op_timeout:?}"),
                        ),
                        Ok(Ok(_)) => {}
                    }
                    let ok = result.is_ok_and(|r| r.is_ok());
                    if register {
                        h.write(value, inv, ok);
                    } else if ok {
                        logs.lock().unwrap().push(key);
                    }
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failed_writes.fetch_add(1, Ordering::Relaxed);
                        clients.by_endpoint.remove(&ep);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        for r in 0..readers {
            let (stop, eps, h, failed, unreachable) = (
                l.stop.clone(),
                l.endpoints.clone(),
                l.history.clone(),
                l.failed.clone(),
                l.unreachable.clone(),
            );
            let errors = l.errors.clone();
            let mut clients = Clients::new(options.clone());
            let op_timeout = options.op_timeout();
            l.tasks.push(tokio::spawn(async move {
                let mut seq: usize = r;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let ep = clients.pick(&eps, seq);
                    let Some(c) = clients.get(&ep).await else {
                        unreachable.fetch_add(1, Ordering::Relaxed);
                        clients.avoid(&ep).await;
                        continue;
                    };
                    let inv = h.now();
                    match tokio::time::timeout(op_timeout, c.get(REGISTER, None)).await {
                        Ok(Ok(resp)) => {
                            if let Some(kv) = resp.kvs().first() {
                                h.read(kv.value_str().unwrap_or("").to_string(), inv);
                            }
                        }
                        Ok(Err(e)) if not_sent(&e) => {
                            unreachable.fetch_add(1, Ordering::Relaxed);
                            clients.avoid(&ep).await;
                        }
                        Ok(Err(e)) => {
                            note_error(&errors, format!("get via {ep}: {e:?}"));
                            failed.fetch_add(1, Ordering::Relaxed);
                            clients.by_endpoint.remove(&ep);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            clients.by_endpoint.remove(&ep);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        l
    }

    /// Directs new operations to `endpoints`.
    pub fn set_endpoints(&self, endpoints: Vec<String>) {
        assert!(!endpoints.is_empty());
        *self.endpoints.lock().unwrap() = endpoints;
    }

    /// Acknowledged register writes so far.
    pub fn acked_writes(&self) -> usize {
        acked_writes(&self.history.ops())
    }

    /// Stops every task and returns what was recorded.
    pub async fn stop(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let history = self.history.ops();
        let acked_logs = self.acked_logs.lock().unwrap().clone();
        Recorded {
            history,
            acked_logs,
            failed: self.failed.load(Ordering::Relaxed),
            failed_writes: self.failed_writes.load(Ordering::Relaxed),
            unreachable: self.unreachable.load(Ordering::Relaxed),
            errors: self.errors.lock().unwrap().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::not_sent;
    use std::io;

    fn status_from(e: impl std::error::Error + Send + Sync + 'static) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(e)))
    }

    #[test]
    fn a_connection_reset_while_connecting_was_not_sent() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let e = status_from(tonic::ConnectError(Box::new(reset)));
        assert!(not_sent(&e), "{e:?}");
    }

    /// A real h2 client and server over an in-memory pipe: the server takes stream 1, then
    /// starts a graceful shutdown; the client's next request fails with the member's GOAWAY, the
    /// error this returns, wrapped in a status as tonic wraps it.
    async fn a_request_after_a_graceful_go_away() -> etcd_client::Error {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io)
                .await
                .expect("server handshake");
            let (_request, mut respond) = conn
                .accept()
                .await
                .expect("stream 1")
                .expect("stream 1 accepted");
            conn.graceful_shutdown();
            respond
                .send_response(http::Response::new(()), true)
                .expect("answer stream 1");
            // Nothing more may reach the member: the connection ends (an error or its end).
            if let Some(Ok(_)) = conn.accept().await {
                panic!("a stream after the GOAWAY was processed");
            }
        });
        let (mut client, conn) = h2::client::handshake(client_io).await.expect("handshake");
        let driver = tokio::spawn(conn);
        let request = http::Request::post("http://member/etcdserverpb.KV/Put").body(());
        let (first, _) = client
            .send_request(request.expect("request"), true)
            .expect("stream 1 sent");
        first.await.expect("stream 1 answered");
        // On this one-thread runtime the server wrote its answer and its GOAWAY before the
        // client read either, so the next stream is refused before it leaves.
        let refused = client
            .ready()
            .await
            .expect_err("the client has read the GOAWAY");
        let _ = driver.await;
        server.await.expect("server");
        status_from(refused)
    }

    #[tokio::test]
    async fn a_stream_refused_by_a_graceful_go_away_was_not_sent() {
        let e = a_request_after_a_graceful_go_away().await;
        assert!(not_sent(&e), "{e:?}");
        // An h2 error that is not the member's graceful GOAWAY may follow processing.
        let e = status_from(h2::Error::from(h2::Reason::INTERNAL_ERROR));
        assert!(!not_sent(&e), "{e:?}");
    }

    #[test]
    fn a_reset_on_an_established_connection_may_have_been_sent() {
        // The same reset without the connector around it: the request may have been written.
        let e = etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "Connection reset by peer (os error 104)",
        ));
        assert!(!not_sent(&e), "{e:?}");
        let e = status_from(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(!not_sent(&e), "{e:?}");
    }
}
