//! A test-only Schema Registry: the REST subset that clients use, in memory (no Schema
//! Registry server can be installed here: docs/testing.md). Its wire compatibility is proven by
//! confluent-kafka's Python `SchemaRegistryClient` and serializers (tests/e2e/registry.sh).
//!
//! Serves `GET /schemas/ids/{id}`, `GET /subjects`, `GET /subjects/{s}/versions`,
//! `GET /subjects/{s}/versions/{v|latest}`, `POST /subjects/{s}/versions` (register: the same
//! schema text, type and references get the same id, under any subject) and `POST /subjects/{s}`
//! (look a schema up), with optional basic auth. Faults for tests: [`SchemaServer::set_down`]
//! answers 503 to everything; every request is counted.
//!
//! Invariant: ids start at 1 and never change; errors use the registry's JSON shape
//! (`{"error_code": 40403, "message": …}`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// A registered schema.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    schema: String,
    schema_type: String,
    references: Value,
}

#[derive(Default)]
struct State {
    by_id: Vec<Stored>,
    /// Subject → ids of its versions, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
}

/// The running server (stops when dropped).
pub struct SchemaServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SchemaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SchemaServer {
    /// Serves on `addr` (port 0: any free port); `auth` is a required (user, password).
    pub async fn start(addr: SocketAddr, auth: Option<(String, String)>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let down = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let expected = auth.map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let (s, d, r) = (state.clone(), down.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (s, d, r, expected) = (s.clone(), d.clone(), r.clone(), expected.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, d, r, expected) =
                            (s.clone(), d.clone(), r.clone(), expected.clone());
                        async move {
                            r.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(
                                handle(req, &s, &d, expected.as_deref()).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            down,
            requests,
            task,
        })
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer 503 to everything (`true`) or serve again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Requests served so far (any path, any answer).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Registers a schema under `subject` (`schema_type`: AVRO, PROTOBUF or JSON); returns its id.
    pub fn register(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
        references: Value,
    ) -> u32 {
        register(
            &mut lock(&self.state),
            subject,
            Stored {
                schema: schema.to_string(),
                schema_type: schema_type.to_string(),
                references,
            },
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(st: &mut State, subject: &str, s: Stored) -> u32 {
    let id = match st.by_id.iter().position(|x| *x == s) {
        Some(i) => i as u32 + 1,
        None => {
            st.by_id.push(s);
            st.by_id.len() as u32
        }
    };
    let versions = st.subjects.entry(subject.to_string()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    id
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.schemaregistry.v1+json"),
    );
    r
}

fn error(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    answer(status, json!({"error_code": code, "message": message}))
}

fn schema_json(id: u32, s: &Stored) -> Value {
    let mut v = json!({"id": id, "schema": s.schema});
    if s.schema_type != "AVRO" {
        v["schemaType"] = json!(s.schema_type);
    }
    if s.references.as_array().is_some_and(|a| !a.is_empty()) {
        v["references"] = s.references.clone();
    }
    v
}

async fn handle(
    req: Request<Incoming>,
    state: &Mutex<State>,
    down: &AtomicBool,
    auth: Option<&str>,
) -> Response<Full<Bytes>> {
    if down.load(Ordering::Relaxed) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            50300,
            "unavailable (test fault)",
        );
    }
    if let Some(expected) = auth {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected) {
            return error(StatusCode::UNAUTHORIZED, 40101, "Unauthorized");
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, 400, "unreadable body"),
    };
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let mut st = lock(state);
    match (&method, parts.as_slice()) {
        (&Method::GET, ["schemas", "ids", id]) => {
            match id
                .parse::<u32>()
                .ok()
                .and_then(|i| Some((i, st.by_id.get(i.checked_sub(1)? as usize)?)))
            {
                Some((i, s)) => answer(StatusCode::OK, schema_json(i, s)),
                None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
            }
        }
        (&Method::GET, ["subjects"]) => answer(
            StatusCode::OK,
            json!(st.subjects.keys().collect::<Vec<_>>()),
        ),
        (&Method::GET, ["subjects", subject, "versions"]) => match st.subjects.get(*subject) {
            Some(v) => answer(StatusCode::OK, json!((1..=v.len()).collect::<Vec<_>>())),
            None => error(StatusCode::NOT_FOUND, 40401, "Subject not found"),
        },
        (&Method::GET, ["subjects", subject, "versions", version]) => {
            let Some(ids) = st.subjects.get(*subject) else {
                return error(StatusCode::NOT_FOUND, 40401, "Subject not found");
            };
            let n = match *version {
                "latest" | "-1" => Some(ids.len()),
                v => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=ids.len()).contains(n)),
            };
            match n {
                Some(n) => {
                    let id = ids[n - 1];
                    let mut v = schema_json(id, &st.by_id[id as usize - 1]);
                    v["subject"] = json!(subject);
                    v["version"] = json!(n);
                    answer(StatusCode::OK, v)
                }
                None => error(StatusCode::NOT_FOUND, 40402, "Version not found"),
            }
        }
        (&Method::POST, ["subjects", subject, "versions"])
        | (&Method::POST, ["subjects", subject]) => {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
            };
            let Some(schema) = v.get("schema").and_then(Value::as_str) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
            };
            let stored = Stored {
                schema: schema.to_string(),
                schema_type: v
                    .get("schemaType")
                    .and_then(Value::as_str)
                    .unwrap_or("AVRO")
                    .to_string(),
                references: v.get("references").cloned().unwrap_or(json!([])),
            };
            let is_lookup = parts.len() == 2;
            if is_lookup {
                let found = st.subjects.get(*subject).and_then(|ids| {
                    ids.iter()
                        .enumerate()
                        .find(|(_, &i)| st.by_id[i as usize - 1] == stored)
                        .map(|(n, &i)| (n + 1, i))
                });
                return match found {
                    Some((n, id)) => {
                        let mut v = schema_json(id, &stored);
                        v["subject"] = json!(subject);
                        v["version"] = json!(n);
                        answer(StatusCode::OK, v)
                    }
                    None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
                };
            }
            let id = register(&mut st, subject, stored);
            answer(StatusCode::OK, json!({"id": id}))
        }
        _ => error(StatusCode::NOT_FOUND, 404, "not found"),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
