//! HTTP on the coordinator's own port: probes, Prometheus metrics and a JSON API
//! (ARCHITECTURE.md § HTTP, dashboard and metrics).
//!
//! Every coordinator serves HTTP/1.1 and gRPC on one listener, told apart per request, as etcd
//! does on 2379: tonic's server accepts HTTP/1.1 too (`accept_http1`), and its router is an
//! axum router, so [`router`] adds plain routes beside the gRPC services; a gRPC path is
//! `/package.Service/Method` (its first segment holds a dot) and never collides with these.
//!
//! | path | what | who may read it |
//! |---|---|---|
//! | `/livez` | the process answers | anyone |
//! | `/readyz[?verbose]` | a leader is known, DuckDB answers, the node is not shutting down; `verbose` lists each check | anyone |
//! | `/metrics` | Prometheus text ([`metrics`]), names prefixed `testfleet_` | anyone, or operators with `--metrics-auth` |
//! | `/api/status`, `/api/workers`, `/api/tasks`, `/api/jobs`, `/api/recovery` | JSON mirrors of the CLI's reads ([`api`]) | operators |
//! | `/`, `/events`, `/viz/{kind}.svg` | the dashboard, its live update stream and its pictures ([`dashboard`]) | operators (a browser is sent to `/login`) |
//! | `/login` | a form that takes an operator token and sets it as a cookie | anyone |
//!
//! **Trust.** The [`Gate`] in front of every service passes HTTP paths through untouched
//! ([`crate::auth::gate::is_http`]); [`authorize`] applies the same keyring and certificate
//! rules here: the token comes from `Authorization: Bearer` or the `testfleet_token` cookie
//! that `/login` sets (HttpOnly, SameSite=Strict). An open node (loopback, no tokens) admits
//! everyone, as it does for gRPC.
//!
//! Reads come from this node's own applied state (its DuckDB after a flush, its state
//! machine), so every node answers, a follower possibly a flush behind the leader; each JSON
//! reply says which node answered and at which applied index.

pub mod api;
pub mod dashboard;
pub mod metrics;
pub mod probes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::auth::gate::{Access, Gate};
use crate::coordinator::Coordinator;

/// The cookie `/login` sets.
pub const TOKEN_COOKIE: &str = "testfleet_token";

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct Http {
    pub node: Arc<Coordinator>,
    pub gate: Gate,
    /// `/metrics` needs an authenticated caller (`--metrics-auth`).
    pub metrics_auth: bool,
}

/// The HTTP routes of `node`, to merge with the gRPC services.
pub fn router(http: Http) -> Router {
    let operator = Router::new()
        .route("/", get(dashboard::page))
        .route("/events", get(dashboard::events))
        .route("/viz/{kind}", get(dashboard::picture))
        .route("/reports/{name}", get(dashboard::report))
        .route("/api/status", get(api::status))
        .route("/api/workers", get(api::workers))
        .route("/api/tasks", get(api::tasks))
        .route("/api/jobs", get(api::jobs))
        .route("/api/recovery", get(api::recovery))
        .route_layer(middleware::from_fn_with_state(http.clone(), operators_only));
    let metrics = Router::new()
        .route("/metrics", get(metrics::scrape))
        .route_layer(middleware::from_fn_with_state(http.clone(), metrics_gate));
    Router::new()
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .route("/login", get(login_form).post(login))
        .merge(operator)
        .merge(metrics)
        .with_state(http)
}

/// Admits a request needing `needed`, with the token from its `Authorization` header or its
/// cookie, and its client certificate; the refusal's status and message otherwise.
pub fn authorize(
    gate: &Gate,
    request: &Request,
    needed: Access,
) -> Result<(), (StatusCode, String)> {
    let mut headers = request.headers().clone();
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(token) = cookie(request.headers(), TOKEN_COOKIE)
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    let certificates = crate::auth::peer_certificates(request.extensions());
    let first = certificates.as_ref().and_then(|c| c.first());
    gate.admit_as(
        needed,
        request.uri().path(),
        &headers,
        first.map(|c| c.as_ref()),
    )
    .map(|_| ())
    .map_err(|status| {
        let code = match status.code() {
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        (code, status.message().to_string())
    })
}

async fn operators_only(State(http): State<Http>, request: Request, next: Next) -> Response {
    match authorize(&http.gate, &request, Access::Operator) {
        Ok(()) => next.run(request).await,
        // A person at a browser is sent to the login form, and back here after it.
        Err(_) if request.uri().path() == "/" => Redirect::to("/login?next=/").into_response(),
        Err((code, message)) => refusal(code, &message),
    }
}

async fn metrics_gate(State(http): State<Http>, request: Request, next: Next) -> Response {
    if !http.metrics_auth {
        return next.run(request).await;
    }
    match authorize(&http.gate, &request, Access::Any) {
        Ok(()) => next.run(request).await,
        Err((code, message)) => refusal(code, &message),
    }
}

/// A refusal as JSON, with a pointer to the login form.
fn refusal(code: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "error": message,
        "login": "/login",
    });
    (code, axum::Json(body)).into_response()
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `?next=PATH`: where the form sends the browser after signing in.
#[derive(serde::Deserialize)]
struct NextPath {
    next: Option<String>,
}

async fn login_form(axum::extract::Query(q): axum::extract::Query<NextPath>) -> Html<String> {
    let next = q
        .next
        .filter(|n| local_path(n))
        .unwrap_or_else(|| "/".to_string());
    Html(LOGIN_PAGE.replace("{next}", &html_escape(&next)))
}

/// A path on this server (not `//host`, which a browser reads as another host).
fn local_path(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//")
}

/// What the login form posts.
#[derive(serde::Deserialize)]
struct Login {
    token: String,
    #[serde(default)]
    next: String,
}

/// Checks the token as an operator's and sets it as the session cookie.
async fn login(State(http): State<Http>, axum::Form(form): axum::Form<Login>) -> Response {
    let token = form.token.trim();
    let mut headers = HeaderMap::new();
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return (StatusCode::BAD_REQUEST, "a token is letters and digits").into_response();
    };
    headers.insert(header::AUTHORIZATION, bearer);
    if let Err(status) = http
        .gate
        .admit_as(Access::Operator, "/login", &headers, None)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Html(format!(
                "<p>{}</p><p><a href=\"/login\">Try again</a></p>",
                html_escape(status.message())
            )),
        )
            .into_response();
    }
    let next = if local_path(&form.next) {
        form.next
    } else {
        "/".to_string()
    };
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Text made safe to put in HTML.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Testfleet: sign in</title></head>
<body>
<h1>Testfleet</h1>
<form method="post" action="/login">
<label>Operator token (the file <code>operator.token</code> from <code>testfleet auth init</code>)
<input name="token" type="password" autocomplete="off" autofocus></label>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form>
</body></html>
"#;
