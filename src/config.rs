//! The configuration file (SPEC §2): TOML parsed into a raw serde shape that rejects
//! unknown keys, then validated into a ready-to-use [`Config`]. Every error names the
//! file, the key and the problem, so an operator never has to guess.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::mock::Template;
use crate::route::{Expression, Table};
use crate::throttle::{self, Limit};

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(
                f,
                "{}: key `{}`: {}",
                self.file.display(),
                self.key,
                self.problem
            )
        }
    }
}

impl std::error::Error for Error {}

/// Command-line values that override the file (SPEC §1).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub management_listen: Option<String>,
    pub workers: Option<usize>,
    pub pin_cores: bool,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

// ---------------------------------------------------------------------------
// Raw shape, as written in the file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api: RawApi,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    management: RawManagement,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    integrations: BTreeMap<String, RawIntegration>,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
    throttling: Option<RawThrottling>,
    access_log: Option<RawAccessLog>,
    #[serde(default)]
    aws: RawAws,
    #[serde(default)]
    authorizers: BTreeMap<String, RawAuthorizer>,
    cluster: Option<crate::cluster::RawCluster>,
    /// `[models.NAME]` (SPEC §14).
    #[serde(default)]
    models: BTreeMap<String, crate::model::RawModel>,
}

/// `[authorizers.NAME]` (SPEC §11).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorizer {
    #[serde(rename = "type")]
    kind: String,
    uri: String,
    #[serde(default)]
    identity_sources: Vec<String>,
    timeout: Option<String>,
    cache_ttl: Option<String>,
}

/// `[aws]` (SPEC §11, §12).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    account_id: Option<String>,
    lambda_endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    path: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default = "default_api_name")]
    name: String,
    #[serde(default = "default_rse")]
    route_selection_expression: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    stage_variables: BTreeMap<String, String>,
    /// AWS's `DisableSchemaValidation` (SPEC §14).
    #[serde(default)]
    disable_schema_validation: bool,
}

fn default_api_name() -> String {
    "wsgate".into()
}
fn default_rse() -> String {
    "$request.body.action".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    workers: Option<usize>,
    pin_cores: Option<bool>,
    handshake_timeout: Option<String>,
    drain_timeout: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    proxy_protocol: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    tls: Option<RawTls>,
}

/// `[server.tls]` / `[management.tls]` (SPEC §10.1).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    min_version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    listen: Option<String>,
    auth: Option<String>,
    token: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    public_paths: Option<Vec<String>>,
    on_api_listener: Option<bool>,
    tls: Option<RawTls>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_frame_bytes: Option<u64>,
    max_message_bytes: Option<u64>,
    binary: Option<String>,
    idle_timeout: Option<String>,
    max_connection_duration: Option<String>,
    ping_interval: Option<String>,
    pong_timeout: Option<String>,
    max_pending_outbound_bytes: Option<u64>,
    max_inflight_per_connection: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegration {
    #[serde(rename = "type")]
    kind: String,
    uri: Option<String>,
    response: Option<String>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    pool_size: Option<u64>,
    max_queued_requests: Option<u64>,
    pipeline: Option<u64>,
    request_parameters: Option<BTreeMap<String, String>>,
    status: Option<u16>,
    response_template: Option<String>,
    tls_ca: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    integration: String,
    #[serde(default)]
    route_response: bool,
    throttling: Option<RawLimit>,
    authorizer: Option<String>,
    /// Request validation (SPEC §14), resolved by [`crate::model::Models::build`].
    request_model: Option<String>,
    request_models: Option<BTreeMap<String, String>>,
    model_selection_expression: Option<String>,
}

/// `[throttling]` (SPEC §10.3); every key defaults to 0 = unlimited.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawThrottling {
    connect_rate: Option<f64>,
    connect_burst: Option<f64>,
    rate: Option<f64>,
    burst: Option<f64>,
    per_connection: Option<RawLimit>,
}

/// `{ rate, burst }` of a route or of `per_connection`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rate: Option<f64>,
    burst: Option<f64>,
}

// ---------------------------------------------------------------------------
// Validated shape, as the runtime uses it.

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub api: Api,
    pub server: Server,
    pub management: Management,
    pub limits: Limits,
    pub integrations: Vec<Integration>,
    /// Every route, `$connect`/`$disconnect`/`$default` included; indexes are route ids.
    pub routes: Vec<Route>,
    pub connect_route: Option<usize>,
    pub disconnect_route: Option<usize>,
    pub default_route: Option<usize>,
    /// Message routes (custom keys and `$default`) compiled for selection.
    pub table: Table,
    /// `[access_log]` (SPEC §10.4); `None`: no access log.
    pub access_log: Option<crate::access_log::writer::Settings>,
    pub throttling: Throttling,
    pub aws: Aws,
    /// `[authorizers.*]` (SPEC §11); a route names one by index.
    pub authorizers: Vec<Authorizer>,
    /// `[cluster]` (SPEC §15); `None`: a single node.
    pub cluster: Option<crate::cluster::Settings>,
    /// `[models.*]` compiled, and which one each route validates against (SPEC §14).
    pub models: crate::model::Models,
}

/// A REQUEST authorizer (SPEC §11): its call rides an `aws_proxy` integration of its
/// own (appended to [`Config::integrations`], so it gets a pool like any backend).
#[derive(Debug)]
pub struct Authorizer {
    pub name: String,
    /// Index into [`Config::integrations`].
    pub integration: usize,
    pub identity_sources: Vec<IdentitySource>,
    /// `cache_ttl` [ext]; zero: no cache.
    pub cache_ttl: Duration,
    /// `arn:aws:execute-api:{region}:{account}:{api}/{stage}/$connect`.
    pub method_arn: String,
}

/// Where an identity value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A handshake header (name lower-cased).
    Header(String),
    /// A query-string parameter.
    Query(String),
}

/// `[aws]` (SPEC §11, §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aws {
    /// `region`, else `AWS_REGION` / `AWS_DEFAULT_REGION`; required by a Lambda URI.
    pub region: Option<String>,
    /// For the authorizer's `methodArn` (default `000000000000`).
    pub account_id: String,
}

/// Throttling limits (SPEC §10.3), for the whole process; workers divide them.
/// Every limit defaults to unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throttling {
    /// New connections (upgrade requests) per second.
    pub connect: Limit,
    /// Messages per second, all routes together (the stage's default).
    pub stage: Limit,
    /// Messages per second of one connection (not divided among workers).
    pub per_connection: Limit,
}

#[derive(Debug)]
pub struct Api {
    pub name: String,
    pub route_selection_expression: String,
    /// Without slashes; "" means clients connect to "/".
    pub stage: String,
    pub stage_variables: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    pub workers: usize,
    pub pin_cores: bool,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
    pub log_level: log::LevelFilter,
    pub log_format: LogFormat,
    /// Whether a PROXY protocol header comes first on every connection (SPEC §10.2).
    pub proxy_protocol: crate::proxy_protocol::Mode,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: crate::forwarded::Trusted,
    /// `[server.tls]`: clients connect with wss:// (absent: ws://).
    pub tls: Option<crate::tls::Files>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Token(String),
    SigV4 {
        access_key_id: String,
        secret_access_key: String,
    },
}

#[derive(Debug)]
pub struct Management {
    pub listen: SocketAddr,
    pub auth: Auth,
    pub public_paths: PublicPaths,
    /// `[management.tls]`: the management API is served over HTTPS.
    pub tls: Option<crate::tls::Files>,
    /// `on_api_listener` (SPEC §13): the client listener also serves
    /// `@connections` requests, with this auth (never `none`).
    pub on_api_listener: bool,
}

/// The management paths answered without auth (`management.public_paths`, SPEC §8);
/// by default none is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublicPaths {
    pub health: bool,
    pub metrics: bool,
}

/// Per-connection limits; the defaults are AWS's (reference §1.11).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub allow_binary: bool,
    pub idle_timeout: Duration,
    pub max_connection_duration: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub max_pending_outbound_bytes: usize,
    pub max_inflight_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 32 * 1024,
            max_message_bytes: 128 * 1024,
            allow_binary: false,
            idle_timeout: Duration::from_secs(600),
            max_connection_duration: Duration::from_secs(7200),
            ping_interval: Duration::ZERO,
            pong_timeout: Duration::from_secs(10),
            max_pending_outbound_bytes: 1024 * 1024,
            max_inflight_per_connection: 1024,
        }
    }
}

#[derive(Debug)]
pub struct Integration {
    pub name: String,
    pub kind: IntegrationKind,
}

// A config holds a handful of integrations, built once: their size does not matter,
// and a Box would add a pointer chase on every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum IntegrationKind {
    /// No backend: a fixed status and a rendered template (SPEC §5).
    Mock { status: u16, template: Template },
    /// An HTTP backend (`aws_proxy` or `http_proxy`).
    Http(Http),
}

/// An HTTP backend integration, resolved at load time.
#[derive(Debug)]
pub struct Http {
    /// `aws_proxy` (the event JSON) or `http_proxy` (the raw message).
    pub proxy: Proxy,
    pub uri: Uri,
    /// For an `https://` URI: the server name and trust anchors (`tls_ca`, or the
    /// system's roots).
    pub tls: Option<crate::upstream::tls::Target>,
    /// `response = "lambda"`: the reply body is a Lambda proxy result.
    pub lambda: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_size: usize,
    pub max_queued_requests: usize,
    /// Most requests in flight on one keep-alive connection (SPEC §16; 1: no
    /// pipelining). Integrations with different values never share a pool.
    pub pipeline: usize,
    /// `http_proxy` data mapping, e.g.
    /// `integration.request.header.connectionId = context.connectionId`.
    pub request_parameters: Vec<crate::mapping::Mapping>,
    /// A Lambda function `uri` (SPEC §12): `uri` is then the Invoke API call on the
    /// Lambda endpoint, signed with these.
    pub invoke: Option<Box<crate::aws::Invoke>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Aws,
    Http,
}

/// An `http://` or `https://` backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub addr: SocketAddr,
    /// The `Host` header: the authority as written.
    pub authority: String,
    /// Path and query, at least "/".
    pub path: String,
}

#[derive(Debug)]
pub struct Route {
    pub key: String,
    pub integration: usize,
    pub route_response: bool,
    /// The route's own message limit (unlimited when it sets none).
    pub throttling: Limit,
    /// `authorizer` (only on `$connect`): index into [`Config::authorizers`].
    pub authorizer: Option<usize>,
}

/// Largest frame or message a configuration may allow (the 64-bit length field is
/// not an invitation to buffer exabytes).
const MAX_CONFIGURABLE_BYTES: u64 = 1 << 30;
/// Most requests an integration may have in flight on one backend connection.
pub const MAX_PIPELINE: u64 = 64;

/// Reads, parses and validates the file at `path`, then applies `overrides`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        file: path.to_path_buf(),
        key: String::new(),
        problem: format!("cannot read the file: {e}"),
    })?;
    parse(path, &text, overrides)
}

/// Parses and validates configuration text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, Error> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| Error {
        file: path.to_path_buf(),
        key: String::new(),
        problem: e.to_string().trim_end().replace('\n', "\n  "),
    })?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Validator {
        file: path,
        tls: Default::default(),
        env: &env,
        credentials: Default::default(),
    }
    .config(raw, overrides)
}

struct Validator<'a> {
    file: &'a Path,
    /// TLS client configs, one per trust anchor set (the system's roots load once).
    tls: std::cell::RefCell<crate::upstream::tls::ClientConfigs>,
    /// The process environment (AWS region and credentials), a seam for tests.
    env: &'a dyn Fn(&str) -> Option<String>,
    /// AWS credentials, loaded once when the first Lambda URI needs them.
    credentials: std::cell::RefCell<Option<std::sync::Arc<crate::aws::Credentials>>>,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> Error {
        Error {
            file: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn config(&self, raw: RawConfig, o: &Overrides) -> Result<Config, Error> {
        let disable_schema_validation = raw.api.disable_schema_validation;
        let api = self.api(raw.api)?;
        let server = self.server(raw.server, o)?;
        let management = self.management(raw.management, o)?;
        let limits = self.limits(raw.limits)?;
        let throttling = self.throttling(raw.throttling.unwrap_or_default())?;
        let aws = self.aws(&raw.aws)?;
        let mut names = Vec::new();
        let mut integrations = Vec::new();
        for (name, ri) in raw.integrations {
            if name.is_empty() {
                return Err(self.err("integrations.\"\"", "an integration name must not be empty"));
            }
            integrations.push(self.integration(&name, ri, &api.stage_variables, &raw.aws, &aws)?);
            names.push(name);
        }
        let mut authorizers = Vec::new();
        for (name, ra) in raw.authorizers {
            let integration = integrations.len();
            let (a, i) = self.authorizer(&name, ra, integration, &api, &raw.aws, &aws)?;
            integrations.push(i);
            authorizers.push(a);
        }
        let mut routes = Vec::new();
        let (mut connect_route, mut disconnect_route, mut default_route) = (None, None, None);
        let mut custom = Vec::new();
        let mut route_models = Vec::new();
        for (key, rr) in raw.routes {
            if key.is_empty() {
                return Err(self.err(
                    "routes.\"\"",
                    "a route key must not be empty (a message whose expression evaluates to nothing goes to $default)",
                ));
            }
            let k = format!("routes.\"{key}\".integration");
            let integration = names
                .iter()
                .position(|n| *n == rr.integration)
                .ok_or_else(|| {
                    self.err(
                        &k,
                        format!(
                            "no integration named \"{}\" (define [integrations.{}])",
                            rr.integration, rr.integration
                        ),
                    )
                })?;
            let id = routes.len();
            let route_throttling = match rr.throttling {
                Some(t) => self.route_throttling(&key, t, &throttling)?,
                None => Limit::UNLIMITED,
            };
            match key.as_str() {
                "$connect" => connect_route = Some(id),
                "$disconnect" => disconnect_route = Some(id),
                "$default" => default_route = Some(id),
                k if k.starts_with('$') => return Err(self.err(
                    format!("routes.\"{key}\""),
                    "route keys starting with `$` are reserved ($connect, $disconnect, $default)",
                )),
                _ => custom.push((key.clone(), id)),
            }
            let authorizer = match rr.authorizer {
                None => None,
                Some(_) if key != "$connect" => {
                    return Err(self.err(
                        format!("routes.\"{key}\".authorizer"),
                        "only $connect takes an authorizer",
                    ))
                }
                Some(a) => Some(
                    authorizers
                        .iter()
                        .position(|x: &Authorizer| x.name == a)
                        .ok_or_else(|| {
                            self.err(
                                format!("routes.\"{key}\".authorizer"),
                                format!("no authorizer named \"{a}\" (define [authorizers.{a}])"),
                            )
                        })?,
                ),
            };
            route_models.push(crate::model::RawRoute {
                request_model: rr.request_model,
                request_models: rr.request_models,
                model_selection_expression: rr.model_selection_expression,
            });
            routes.push(Route {
                key,
                integration,
                route_response: rr.route_response,
                throttling: route_throttling,
                authorizer,
            });
        }
        let expression = Expression::parse(&api.route_selection_expression)
            .map_err(|e| self.err("api.route_selection_expression", e.message))?;
        let table = Table::new(expression, custom, default_route);
        let access_log = raw.access_log.map(|a| self.access_log(a)).transpose()?;
        let cluster = raw.cluster.map(|c| self.cluster(c)).transpose()?;
        let models = self.models(raw.models, &routes, route_models, disable_schema_validation)?;
        Ok(Config {
            path: self.file.to_path_buf(),
            api,
            server,
            management,
            limits,
            integrations,
            routes,
            connect_route,
            disconnect_route,
            default_route,
            table,
            throttling,
            access_log,
            aws,
            authorizers,
            cluster,
            models,
        })
    }

    /// `[models.*]` and the routes' model keys (SPEC §14); schema files are read
    /// relative to the configuration file's folder.
    fn models(
        &self,
        raw: BTreeMap<String, crate::model::RawModel>,
        routes: &[Route],
        route_models: Vec<crate::model::RawRoute>,
        disabled: bool,
    ) -> Result<crate::model::Models, Error> {
        let dir = self.file.parent().unwrap_or(Path::new(""));
        let keyed = routes
            .iter()
            .map(|r| r.key.as_str())
            .zip(route_models)
            .collect();
        crate::model::Models::build(dir, raw, keyed, disabled)
            .map_err(|e| self.err(e.key, e.problem))
    }

    /// `[authorizers.NAME]`: the authorizer and the `aws_proxy` integration its calls
    /// ride (an HTTP URI or a Lambda function ARN, as an integration's `uri`).
    fn authorizer(
        &self,
        name: &str,
        raw: RawAuthorizer,
        integration: usize,
        api: &Api,
        raw_aws: &RawAws,
        aws: &Aws,
    ) -> Result<(Authorizer, Integration), Error> {
        let key = |field: &str| format!("authorizers.{name}.{field}");
        if raw.kind != "request" {
            return Err(self.err(
                key("type"),
                format!("\"{}\" is not supported (only \"request\")", raw.kind),
            ));
        }
        let mut identity_sources = Vec::new();
        for s in &raw.identity_sources {
            let source = if let Some(h) = s.strip_prefix("route.request.header.") {
                IdentitySource::Header(h.to_ascii_lowercase())
            } else if let Some(q) = s.strip_prefix("route.request.querystring.") {
                IdentitySource::Query(q.to_string())
            } else {
                return Err(self.err(
                    key("identity_sources"),
                    format!("\"{s}\" is not route.request.header.NAME or route.request.querystring.NAME"),
                ));
            };
            if matches!(&source, IdentitySource::Header(n) | IdentitySource::Query(n) if n.is_empty())
            {
                return Err(self.err(key("identity_sources"), format!("\"{s}\" names nothing")));
            }
            identity_sources.push(source);
        }
        let cache_ttl = self.duration(&key("cache_ttl"), raw.cache_ttl.as_deref(), "0s")?;
        if !cache_ttl.is_zero() && identity_sources.is_empty() {
            // The cache is keyed by the identity values: without any, every client
            // would share the first client's answer.
            return Err(self.err(key("cache_ttl"), "needs identity_sources (the cache key)"));
        }
        let ri = RawIntegration {
            kind: "aws_proxy".into(),
            uri: Some(raw.uri),
            response: None,
            timeout: raw.timeout,
            connect_timeout: None,
            pool_size: None,
            max_queued_requests: None,
            pipeline: None,
            request_parameters: None,
            status: None,
            response_template: None,
            tls_ca: None,
        };
        let inner = format!("authorizer:{name}");
        let mut i = self
            .integration(&inner, ri, &api.stage_variables, raw_aws, aws)
            .map_err(|mut e| {
                let prefix = format!("integrations.{inner}.");
                if let Some(rest) = e.key.strip_prefix(&prefix) {
                    e.key = key(rest);
                }
                e
            })?;
        if let IntegrationKind::Http(h) = &mut i.kind {
            // The authorizer's answer is read as its own result, never a proxy result.
            h.lambda = false;
        }
        let method_arn = format!(
            "arn:aws:execute-api:{}:{}:{}/{}/$connect",
            aws.region.as_deref().unwrap_or("local"),
            aws.account_id,
            api.name,
            api.stage
        );
        Ok((
            Authorizer {
                name: name.to_string(),
                integration,
                identity_sources,
                cache_ttl,
                method_arn,
            },
            i,
        ))
    }

    /// `[aws]`: the region (file, else `AWS_REGION` / `AWS_DEFAULT_REGION`) and the
    /// account id.
    fn aws(&self, raw: &RawAws) -> Result<Aws, Error> {
        let region = match &raw.region {
            Some(r)
                if r.is_empty() || !r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') =>
            {
                return Err(self.err("aws.region", format!("\"{r}\" is not a region name")))
            }
            Some(r) => Some(r.clone()),
            None => (self.env)("AWS_REGION").or_else(|| (self.env)("AWS_DEFAULT_REGION")),
        };
        let account_id = raw
            .account_id
            .clone()
            .unwrap_or_else(|| "000000000000".into());
        if account_id.len() != 12 || !account_id.bytes().all(|c| c.is_ascii_digit()) {
            return Err(self.err(
                "aws.account_id",
                format!("\"{account_id}\" is not 12 digits"),
            ));
        }
        Ok(Aws { region, account_id })
    }

    /// A Lambda `uri` (SPEC §12): the Invoke API URI on the Lambda endpoint
    /// (`[aws] lambda_endpoint`, default `https://lambda.{region}.amazonaws.com`) and
    /// what signing needs (region, credentials, loaded once).
    fn lambda(
        &self,
        key: &str,
        function: &str,
        raw: &RawAws,
        aws: &Aws,
    ) -> Result<(Uri, Option<String>, crate::aws::Invoke), Error> {
        let region = aws.region.clone().ok_or_else(|| {
            self.err(
                key,
                "a Lambda function needs a region: set [aws] region, AWS_REGION or AWS_DEFAULT_REGION",
            )
        })?;
        let endpoint = match &raw.lambda_endpoint {
            Some(e) => e.clone(),
            None => format!("https://lambda.{region}.amazonaws.com"),
        };
        let endpoint_key = if raw.lambda_endpoint.is_some() {
            "aws.lambda_endpoint"
        } else {
            key
        };
        let (mut uri, tls_host) = self.parse_uri(endpoint_key, &endpoint)?;
        if uri.path != "/" {
            return Err(self.err(
                "aws.lambda_endpoint",
                format!("\"{endpoint}\" must be a scheme and an address, without a path"),
            ));
        }
        uri.path = crate::aws::invoke_path(function);
        let mut cell = self.credentials.borrow_mut();
        let credentials = match &*cell {
            Some(c) => c.clone(),
            None => {
                let c = crate::aws::Credentials::load_from(self.env).map_err(|p| {
                    self.err(key, format!("a Lambda function needs AWS credentials: {p}"))
                })?;
                cell.insert(std::sync::Arc::new(c)).clone()
            }
        };
        let invoke = crate::aws::Invoke {
            function: function.to_string(),
            region,
            credentials,
        };
        Ok((uri, tls_host, invoke))
    }

    /// `[access_log]`: `path` (`-` = stdout, the default) and `format` (compiled
    /// now, so an unknown variable is a startup error).
    fn access_log(&self, raw: RawAccessLog) -> Result<crate::access_log::writer::Settings, Error> {
        use crate::access_log::{writer::Destination, Format, DEFAULT_FORMAT};
        let path = match raw.path.as_deref().unwrap_or("-") {
            "" => return Err(self.err("access_log.path", "must be \"-\" (stdout) or a file")),
            "-" => Destination::Stdout,
            p => Destination::File(PathBuf::from(p)),
        };
        let format = Format::compile(raw.format.as_deref().unwrap_or(DEFAULT_FORMAT))
            .map_err(|e| self.err("access_log.format", e.0))?;
        Ok(crate::access_log::writer::Settings {
            path,
            format: std::sync::Arc::new(format),
        })
    }

    /// `[throttling]`: each key a number of at least 0 (0 = unlimited).
    fn throttling(&self, raw: RawThrottling) -> Result<Throttling, Error> {
        let pc = raw.per_connection.unwrap_or_default();
        Ok(Throttling {
            connect: self.limit(
                ("throttling.connect_rate", raw.connect_rate),
                ("throttling.connect_burst", raw.connect_burst),
            )?,
            stage: self.limit(
                ("throttling.rate", raw.rate),
                ("throttling.burst", raw.burst),
            )?,
            per_connection: self.limit(
                ("throttling.per_connection.rate", pc.rate),
                ("throttling.per_connection.burst", pc.burst),
            )?,
        })
    }

    /// A route's `throttling = { rate, burst }`: it may only lower the stage's, as
    /// in AWS; `$connect` and `$disconnect` are limited by `connect_rate` instead.
    fn route_throttling(
        &self,
        route: &str,
        raw: RawLimit,
        stage: &Throttling,
    ) -> Result<Limit, Error> {
        let key = |field: &str| format!("routes.\"{route}\".throttling{field}");
        if route == "$connect" || route == "$disconnect" {
            return Err(self.err(
                key(""),
                "only message routes are throttled per route; connections are limited by throttling.connect_rate and connect_burst",
            ));
        }
        let l = self.limit((&key(".rate"), raw.rate), (&key(".burst"), raw.burst))?;
        let s = stage.stage;
        if s.is_limited() && l.rate > s.rate {
            return Err(self.err(
                key(".rate"),
                format!(
                    "{} is above the stage's throttling.rate {}: a route may only lower it",
                    l.rate, s.rate
                ),
            ));
        }
        if s.is_limited() && l.burst > s.burst {
            return Err(self.err(
                key(".burst"),
                format!(
                    "{} is above the stage's throttling.burst {}: a route may only lower it",
                    l.burst, s.burst
                ),
            ));
        }
        Ok(l)
    }

    /// A rate and a burst, each a number in 0..=[`throttle::MAX_VALUE`] (absent: 0).
    fn limit(&self, rate: (&str, Option<f64>), burst: (&str, Option<f64>)) -> Result<Limit, Error> {
        let check = |(key, v): (&str, Option<f64>)| -> Result<f64, Error> {
            let v = v.unwrap_or(0.0);
            if !(0.0..=throttle::MAX_VALUE).contains(&v) {
                return Err(self.err(
                    key,
                    format!("{v} is outside 0..{} (0 = unlimited)", throttle::MAX_VALUE),
                ));
            }
            Ok(v)
        };
        Ok(Limit::new(check(rate)?, check(burst)?))
    }

    fn api(&self, raw: RawApi) -> Result<Api, Error> {
        let stage = raw.stage.trim_matches('/').to_string();
        if stage.contains('/')
            || stage.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        {
            return Err(self.err(
                "api.stage",
                format!("\"{}\" is not a single path segment", raw.stage),
            ));
        }
        Ok(Api {
            name: raw.name,
            route_selection_expression: raw.route_selection_expression,
            stage,
            stage_variables: raw.stage_variables.into_iter().collect(),
        })
    }

    fn server(&self, raw: RawServer, o: &Overrides) -> Result<Server, Error> {
        let (listen_key, listen) = match &o.listen {
            Some(l) => ("--listen", l.clone()),
            None => (
                "server.listen",
                raw.listen.unwrap_or_else(|| "0.0.0.0:8080".into()),
            ),
        };
        let workers = o.workers.or(raw.workers).unwrap_or(0);
        let workers = if workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            workers
        };
        if workers > 255 {
            return Err(self.err(
                "server.workers",
                format!("{workers} workers: at most 255 (ids carry the worker in one byte)"),
            ));
        }
        let (lvl_key, lvl) = match &o.log_level {
            Some(l) => ("--log-level", l.clone()),
            None => (
                "server.log_level",
                raw.log_level.unwrap_or_else(|| "info".into()),
            ),
        };
        let log_level = lvl.parse::<log::LevelFilter>().map_err(|_| {
            self.err(
                lvl_key,
                format!("\"{lvl}\" is not a log level (off, error, warn, info, debug, trace)"),
            )
        })?;
        let (fmt_key, fmt) = match &o.log_format {
            Some(f) => ("--log-format", f.clone()),
            None => (
                "server.log_format",
                raw.log_format.unwrap_or_else(|| "text".into()),
            ),
        };
        let log_format = match fmt.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(self.err(
                    fmt_key,
                    format!("\"{other}\" is not a log format (text, json)"),
                ))
            }
        };
        let proxy_protocol = match raw.proxy_protocol.as_deref().unwrap_or("off") {
            "off" => crate::proxy_protocol::Mode::Off,
            "v1" => crate::proxy_protocol::Mode::V1,
            "v2" => crate::proxy_protocol::Mode::V2,
            "any" => crate::proxy_protocol::Mode::Any,
            other => {
                return Err(self.err(
                    "server.proxy_protocol",
                    format!("\"{other}\" is not one of off, v1, v2, any"),
                ))
            }
        };
        let mut trusted = Vec::new();
        for text in raw.trusted_proxies.unwrap_or_default() {
            trusted.push(
                crate::forwarded::Cidr::parse(&text)
                    .map_err(|p| self.err("server.trusted_proxies", p))?,
            );
        }
        Ok(Server {
            listen: self.addr(listen_key, &listen)?,
            workers,
            pin_cores: o.pin_cores || raw.pin_cores.unwrap_or(false),
            handshake_timeout: self.positive_duration(
                "server.handshake_timeout",
                raw.handshake_timeout.as_deref(),
                "5s",
            )?,
            drain_timeout: self.duration(
                "server.drain_timeout",
                raw.drain_timeout.as_deref(),
                "10s",
            )?,
            log_level,
            log_format,
            proxy_protocol,
            trusted_proxies: crate::forwarded::Trusted::new(trusted),
            tls: self.tls("server.tls", raw.tls)?,
        })
    }

    fn management(&self, raw: RawManagement, o: &Overrides) -> Result<Management, Error> {
        let (key, listen) = match &o.management_listen {
            Some(l) => ("--management-listen", l.clone()),
            None => (
                "management.listen",
                raw.listen.unwrap_or_else(|| "127.0.0.1:9001".into()),
            ),
        };
        let listen = self.addr(key, &listen)?;
        let auth = match raw.auth.as_deref().unwrap_or("none") {
            "none" => {
                if !listen.ip().is_loopback() {
                    return Err(self.err(
                        "management.auth",
                        format!("auth = \"none\" is only allowed on a loopback address, not {listen}: set auth = \"token\" or \"sigv4\""),
                    ));
                }
                Auth::None
            }
            "token" => Auth::Token(raw.token.filter(|t| !t.is_empty()).ok_or_else(|| {
                self.err(
                    "management.token",
                    "auth = \"token\" needs a non-empty token",
                )
            })?),
            "sigv4" => Auth::SigV4 {
                access_key_id: raw.access_key_id.ok_or_else(|| {
                    self.err(
                        "management.access_key_id",
                        "auth = \"sigv4\" needs access_key_id",
                    )
                })?,
                secret_access_key: raw.secret_access_key.ok_or_else(|| {
                    self.err(
                        "management.secret_access_key",
                        "auth = \"sigv4\" needs secret_access_key",
                    )
                })?,
            },
            other => {
                return Err(self.err(
                    "management.auth",
                    format!("\"{other}\" is not one of none, token, sigv4"),
                ))
            }
        };
        let mut public_paths = PublicPaths::default();
        for path in raw.public_paths.unwrap_or_default() {
            match path.as_str() {
                "/health" => public_paths.health = true,
                "/metrics" => public_paths.metrics = true,
                other => {
                    return Err(self.err(
                        "management.public_paths",
                        format!(
                            "\"{other}\" cannot be public: only \"/health\" and \"/metrics\" can"
                        ),
                    ))
                }
            }
        }
        let on_api_listener = raw.on_api_listener.unwrap_or(false);
        if on_api_listener && matches!(auth, Auth::None) {
            return Err(self.err(
                "management.on_api_listener",
                "on_api_listener = true needs auth = \"token\" or \"sigv4\" (the client port is not loopback-only)",
            ));
        }
        Ok(Management {
            listen,
            auth,
            public_paths,
            on_api_listener,
            tls: self.tls("management.tls", raw.tls)?,
        })
    }

    fn limits(&self, raw: RawLimits) -> Result<Limits, Error> {
        let d = Limits::default();
        let bytes = |key: &str, v: Option<u64>, default: usize| -> Result<usize, Error> {
            match v {
                None => Ok(default),
                Some(0) => Err(self.err(format!("limits.{key}"), "must be greater than 0")),
                Some(n) if n > MAX_CONFIGURABLE_BYTES => Err(self.err(
                    format!("limits.{key}"),
                    format!("{n} is above the maximum {MAX_CONFIGURABLE_BYTES}"),
                )),
                Some(n) => Ok(n as usize),
            }
        };
        let max_frame_bytes = bytes("max_frame_bytes", raw.max_frame_bytes, d.max_frame_bytes)?;
        let max_message_bytes = bytes(
            "max_message_bytes",
            raw.max_message_bytes,
            d.max_message_bytes,
        )?;
        let allow_binary = match raw.binary.as_deref().unwrap_or("reject") {
            "reject" => false,
            "allow" => true,
            other => {
                return Err(self.err(
                    "limits.binary",
                    format!("\"{other}\" is not one of reject, allow"),
                ))
            }
        };
        Ok(Limits {
            max_frame_bytes,
            max_message_bytes,
            allow_binary,
            idle_timeout: self.positive_duration(
                "limits.idle_timeout",
                raw.idle_timeout.as_deref(),
                "10m",
            )?,
            max_connection_duration: self.positive_duration(
                "limits.max_connection_duration",
                raw.max_connection_duration.as_deref(),
                "2h",
            )?,
            ping_interval: self.duration(
                "limits.ping_interval",
                raw.ping_interval.as_deref(),
                "0s",
            )?,
            pong_timeout: self.positive_duration(
                "limits.pong_timeout",
                raw.pong_timeout.as_deref(),
                "10s",
            )?,
            max_pending_outbound_bytes: bytes(
                "max_pending_outbound_bytes",
                raw.max_pending_outbound_bytes,
                d.max_pending_outbound_bytes,
            )?,
            max_inflight_per_connection: bytes(
                "max_inflight_per_connection",
                raw.max_inflight_per_connection,
                d.max_inflight_per_connection,
            )?,
        })
    }

    /// `text` with every `${stageVariables.NAME}` replaced by its value.
    fn substitute(
        &self,
        key: &str,
        text: &str,
        vars: &[(String, String)],
    ) -> Result<String, Error> {
        let mut s = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${stageVariables.") {
            s.push_str(&rest[..i]);
            let after = &rest[i + "${stageVariables.".len()..];
            let end = after
                .find('}')
                .ok_or_else(|| self.err(key, format!("unterminated ${{ in \"{text}\"")))?;
            let name = &after[..end];
            let v = vars.iter().find(|(k, _)| k == name).ok_or_else(|| {
                self.err(
                    key,
                    format!("no stage variable \"{name}\" (define it in api.stage_variables)"),
                )
            })?;
            s.push_str(&v.1);
            rest = &after[end + 1..];
        }
        s.push_str(rest);
        Ok(s)
    }

    /// Parses an `http[s]://host[:port][/path]` URI (stage variables already
    /// substituted), and resolves the host now (a clear error at startup beats a
    /// failure on the first message). For `https://`, also the host as written (the
    /// TLS server name).
    fn parse_uri(&self, key: &str, s: &str) -> Result<(Uri, Option<String>), Error> {
        let (after, https) = if let Some(after) = s.strip_prefix("https://") {
            (after, true)
        } else if let Some(after) = s.strip_prefix("http://") {
            (after, false)
        } else {
            return Err(self.err(key, format!("\"{s}\" is not an http:// or https:// URI")));
        };
        let (authority, path) = match after.find(['/', '?']) {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(self.err(key, format!("\"{s}\" has no usable host")));
        }
        let port = authority
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok() && !authority.ends_with(']'));
        let host = port.map_or(authority, |(h, _)| h);
        let with_port = match port {
            Some(_) => authority.to_string(),
            None => format!("{authority}:{}", if https { 443 } else { 80 }),
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| self.err(key, format!("cannot resolve \"{authority}\": {e}")))?
            .next()
            .ok_or_else(|| self.err(key, format!("\"{authority}\" resolves to no address")))?;
        let uri = Uri {
            addr,
            authority: authority.to_string(),
            path,
        };
        Ok((uri, https.then(|| host.to_string())))
    }

    fn integration(
        &self,
        name: &str,
        raw: RawIntegration,
        stage_variables: &[(String, String)],
        raw_aws: &RawAws,
        aws: &Aws,
    ) -> Result<Integration, Error> {
        let key = |field: &str| format!("integrations.{name}.{field}");
        let kind = match raw.kind.as_str() {
            "mock" => {
                for (field, set) in [
                    ("uri", raw.uri.is_some()),
                    ("response", raw.response.is_some()),
                    ("timeout", raw.timeout.is_some()),
                    ("connect_timeout", raw.connect_timeout.is_some()),
                    ("pool_size", raw.pool_size.is_some()),
                    ("max_queued_requests", raw.max_queued_requests.is_some()),
                    ("pipeline", raw.pipeline.is_some()),
                    ("request_parameters", raw.request_parameters.is_some()),
                    ("tls_ca", raw.tls_ca.is_some()),
                ] {
                    if set {
                        return Err(self.err(key(field), "not used by a mock integration"));
                    }
                }
                let status = raw.status.unwrap_or(200);
                if !(100..=599).contains(&status) {
                    return Err(self.err(
                        key("status"),
                        format!("{status} is not an HTTP status (100..599)"),
                    ));
                }
                let template = Template::parse(raw.response_template.as_deref().unwrap_or(""))
                    .map_err(|p| self.err(key("response_template"), p))?;
                IntegrationKind::Mock { status, template }
            }
            "aws_proxy" | "http_proxy" => {
                let proxy = if raw.kind == "aws_proxy" {
                    Proxy::Aws
                } else {
                    Proxy::Http
                };
                for (field, set) in [
                    ("status", raw.status.is_some()),
                    ("response_template", raw.response_template.is_some()),
                ] {
                    if set {
                        return Err(self.err(
                            key(field),
                            format!("not used by an {} integration", raw.kind),
                        ));
                    }
                }
                let uri = raw.uri.as_deref().ok_or_else(|| {
                    self.err(key("uri"), "missing (e.g. \"http://127.0.0.1:3000/ws\")")
                })?;
                // `${stageVariables.NAME}` works in a Lambda ARN too (aliases per stage).
                let substituted = self.substitute(&key("uri"), uri, stage_variables)?;
                let function = crate::aws::function_of(&substituted)
                    .transpose()
                    .map_err(|p| self.err(key("uri"), p))?;
                let (uri, tls_host, invoke) = match function {
                    Some(f) if proxy == Proxy::Aws => {
                        if raw.response.as_deref().is_some_and(|r| r != "lambda") {
                            return Err(self.err(
                                key("response"),
                                "a Lambda function's result is always read as \"lambda\"",
                            ));
                        }
                        let (uri, host, invoke) = self.lambda(&key("uri"), f, raw_aws, aws)?;
                        (uri, host, Some(Box::new(invoke)))
                    }
                    Some(_) => {
                        return Err(self.err(
                            key("uri"),
                            "a Lambda function is an aws_proxy integration's uri only",
                        ))
                    }
                    None => {
                        let (uri, host) = self.parse_uri(&key("uri"), &substituted)?;
                        (uri, host, None)
                    }
                };
                let tls = self.tls_target(&key, tls_host.as_deref(), raw.tls_ca.as_deref())?;
                let default_response = if invoke.is_some() { "lambda" } else { "http" };
                let lambda = match raw.response.as_deref().unwrap_or(default_response) {
                    "http" => false,
                    "lambda" if proxy == Proxy::Aws => true,
                    "lambda" => {
                        return Err(self.err(
                            key("response"),
                            "\"lambda\" applies to aws_proxy integrations only",
                        ))
                    }
                    other => {
                        return Err(self.err(
                            key("response"),
                            format!("\"{other}\" is not one of http, lambda"),
                        ))
                    }
                };
                let timeout = self.duration(&key("timeout"), raw.timeout.as_deref(), "29s")?;
                if timeout < Duration::from_millis(50) || timeout > Duration::from_secs(29) {
                    return Err(self.err(
                        key("timeout"),
                        format!("{timeout:?} is outside 50ms..29s (as AWS)"),
                    ));
                }
                let raw_params = raw.request_parameters.unwrap_or_default();
                if proxy == Proxy::Aws && !raw_params.is_empty() {
                    return Err(self.err(
                        key("request_parameters"),
                        "applies to http_proxy integrations only",
                    ));
                }
                let mut request_parameters = Vec::new();
                for (target, source) in &raw_params {
                    let m = crate::mapping::compile(target, source).map_err(|p| {
                        self.err(format!("{}.\"{target}\"", key("request_parameters")), p)
                    })?;
                    request_parameters.push(m);
                }
                let count = |field: &str, v: Option<u64>, default: usize| -> Result<usize, Error> {
                    match v {
                        None => Ok(default),
                        Some(n) if (1..=100_000).contains(&n) => Ok(n as usize),
                        Some(n) => Err(self.err(key(field), format!("{n} is outside 1..100000"))),
                    }
                };
                IntegrationKind::Http(Http {
                    proxy,
                    uri,
                    tls,
                    lambda,
                    timeout,
                    connect_timeout: self.duration(
                        &key("connect_timeout"),
                        raw.connect_timeout.as_deref(),
                        "2s",
                    )?,
                    pool_size: count("pool_size", raw.pool_size, 64)?,
                    max_queued_requests: count(
                        "max_queued_requests",
                        raw.max_queued_requests,
                        1024,
                    )?,
                    pipeline: match raw.pipeline {
                        None => 1,
                        Some(n) if (1..=MAX_PIPELINE).contains(&n) => n as usize,
                        Some(n) => {
                            return Err(self
                                .err(key("pipeline"), format!("{n} is outside 1..{MAX_PIPELINE}")))
                        }
                    },
                    request_parameters,
                    invoke,
                })
            }
            other => {
                return Err(self.err(
                    key("type"),
                    format!("\"{other}\" is not one of aws_proxy, http_proxy, mock"),
                ))
            }
        };
        Ok(Integration {
            name: name.to_string(),
            kind,
        })
    }

    /// The TLS side of an HTTP integration: for an `https://` URI (`host` set), its
    /// server name and trust anchors, `tls_ca` or else the system's roots; `tls_ca`
    /// on an `http://` URI is an error (it would silently do nothing).
    fn tls_target(
        &self,
        key: &dyn Fn(&str) -> String,
        host: Option<&str>,
        ca: Option<&str>,
    ) -> Result<Option<crate::upstream::tls::Target>, Error> {
        let Some(host) = host else {
            return match ca {
                Some(_) => Err(self.err(key("tls_ca"), "applies to https:// URIs only")),
                None => Ok(None),
            };
        };
        let server_name =
            crate::upstream::tls::server_name(host).map_err(|p| self.err(key("uri"), p))?;
        let mut configs = self.tls.borrow_mut();
        let config = match ca {
            Some("") => return Err(self.err(key("tls_ca"), "must name a PEM file")),
            Some(ca) => configs
                .with_ca(Path::new(ca))
                .map_err(|p| self.err(key("tls_ca"), p))?,
            None => configs.system().map_err(|p| self.err(key("uri"), p))?,
        };
        let target = crate::upstream::tls::Target {
            server_name,
            ca: ca.map(PathBuf::from),
            config,
        };
        Ok(Some(target))
    }

    /// Validates a `[*.tls]` table and loads its pair now, so a missing, unreadable
    /// or mismatched certificate or key stops the start (exit 1) naming the file.
    fn tls(&self, table: &str, raw: Option<RawTls>) -> Result<Option<crate::tls::Files>, Error> {
        use crate::tls::{Files, Version};
        let Some(raw) = raw else {
            return Ok(None);
        };
        let path = |key: &str, v: Option<String>| match v.filter(|v| !v.is_empty()) {
            Some(v) => Ok(PathBuf::from(v)),
            None => Err(self.err(format!("{table}.{key}"), "needs a PEM file path")),
        };
        let cert = path("cert", raw.cert)?;
        let key = path("key", raw.key)?;
        let min_version = match raw.min_version.as_deref().unwrap_or("1.2") {
            "1.2" => Version::Tls12,
            "1.3" => Version::Tls13,
            other => {
                return Err(self.err(
                    format!("{table}.min_version"),
                    format!("\"{other}\" is not one of \"1.2\", \"1.3\""),
                ))
            }
        };
        let files = Files {
            cert,
            key,
            min_version,
        };
        let resumption = crate::tls::Resumption::new()
            .map_err(|e| self.err(table, format!("cannot set up session tickets: {e}")))?;
        crate::tls::load(&files, &resumption).map_err(|e| {
            self.err(
                format!("{table}.{}", e.key),
                format!("{}: {}", e.file.display(), e.problem),
            )
        })?;
        Ok(Some(files))
    }

    fn addr(&self, key: &str, text: &str) -> Result<SocketAddr, Error> {
        text.to_socket_addrs()
            .map_err(|e| self.err(key, format!("\"{text}\" is not an address: {e}")))?
            .next()
            .ok_or_else(|| self.err(key, format!("\"{text}\" resolves to no address")))
    }

    /// A duration of at most a year (deadlines are instants: an absurd duration
    /// must not overflow one).
    fn duration(&self, key: &str, text: Option<&str>, default: &str) -> Result<Duration, Error> {
        let text = text.unwrap_or(default);
        let d = humantime::parse_duration(text).map_err(|e| {
            self.err(key, format!("\"{text}\" is not a duration ({e}); write e.g. \"500ms\", \"5s\", \"10m\", \"2h\""))
        })?;
        if d > MAX_DURATION {
            return Err(self.err(key, format!("\"{text}\" is longer than a year")));
        }
        Ok(d)
    }

    /// A [`duration`](Self::duration) that must not be zero (a zero deadline would
    /// close every connection at once).
    fn positive_duration(
        &self,
        key: &str,
        text: Option<&str>,
        default: &str,
    ) -> Result<Duration, Error> {
        let d = self.duration(key, text, default)?;
        if d.is_zero() {
            return Err(self.err(key, "must be longer than 0s".to_string()));
        }
        Ok(d)
    }

    /// `[cluster]` (SPEC §15).
    fn cluster(&self, raw: crate::cluster::RawCluster) -> Result<crate::cluster::Settings, Error> {
        let (servers, node, secret) =
            crate::cluster::validate(&raw).map_err(|(key, problem)| self.err(key, problem))?;
        let key = "cluster.request_timeout";
        let request_timeout = self.positive_duration(key, raw.request_timeout.as_deref(), "1s")?;
        if request_timeout > Duration::from_secs(30) {
            // A management call waits for it; the management idle timeout is 60 s.
            return Err(self.err(key, "must be at most 30s"));
        }
        let key = "cluster.isolation_timeout";
        let isolation_timeout = self.duration(key, raw.isolation_timeout.as_deref(), "5s")?;
        if isolation_timeout < 2 * crate::cluster::HEARTBEAT_INTERVAL {
            return Err(self.err(
                key,
                "must be at least 2s (two heartbeat intervals: one lost heartbeat must not make a node look gone)",
            ));
        }
        Ok(crate::cluster::Settings {
            nats: raw.nats,
            servers,
            name: raw.name,
            node,
            secret,
            request_timeout,
            isolation_timeout,
        })
    }
}

/// The longest duration a config may set.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

impl Config {
    /// The route table as `--check` prints it.
    pub fn describe_routes(&self) -> String {
        let mut out = format!(
            "api {} stage /{} route_selection_expression {}\n",
            self.api.name, self.api.stage, self.api.route_selection_expression
        );
        for r in &self.routes {
            let i = &self.integrations[r.integration];
            let kind = match &i.kind {
                IntegrationKind::Mock { status, .. } => format!("mock status={status}"),
                IntegrationKind::Http(h) => format!(
                    "{} POST {}://{}{} via {}",
                    if h.proxy == Proxy::Aws {
                        "aws_proxy"
                    } else {
                        "http_proxy"
                    },
                    if h.tls.is_some() { "https" } else { "http" },
                    h.uri.authority,
                    h.uri.path,
                    h.uri.addr
                ),
            };
            let throttling = if r.throttling.is_limited() {
                format!(
                    " throttling rate={} burst={}",
                    r.throttling.rate, r.throttling.burst
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "route {:<16} -> {} ({kind}){}{throttling}\n",
                r.key,
                i.name,
                if r.route_response {
                    " route_response"
                } else {
                    ""
                }
            ));
        }
        for (id, r) in self.routes.iter().enumerate() {
            if let Some(m) = self.models.describe(id) {
                out.push_str(&format!("route {:<16} model {m}\n", r.key));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, Error> {
        parse(Path::new("t.toml"), text, &Overrides::default())
    }

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, Error> {
        let raw: RawConfig = toml::from_str(text).unwrap();
        let env = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        Validator {
            file: Path::new("t.toml"),
            tls: Default::default(),
            env: &env,
            credentials: Default::default(),
        }
        .config(raw, &Overrides::default())
    }

    const CREDS: [(&str, &str); 2] = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "sekrit"),
    ];

    fn lambda_config(aws: &str, uri: &str) -> String {
        format!(
            "{aws}\n[api]\nname = \"t\"\n[integrations.fn]\ntype = \"aws_proxy\"\nuri = \"{uri}\"\n\
             [routes.\"$default\"]\nintegration = \"fn\"\n"
        )
    }

    #[test]
    fn lambda_uris_become_invoke_calls() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:chat";
        let c = parse_env(
            &lambda_config(
                "[aws]\nregion = \"us-east-1\"\nlambda_endpoint = \"http://127.0.0.1:3001\"",
                arn,
            ),
            &CREDS,
        )
        .unwrap();
        let IntegrationKind::Http(h) = &c.integrations[0].kind else {
            panic!("an HTTP integration");
        };
        assert!(h.lambda, "read as a Lambda result");
        assert_eq!(h.uri.authority, "127.0.0.1:3001");
        assert_eq!(
            h.uri.path,
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Achat/invocations"
        );
        let inv = h.invoke.as_ref().unwrap();
        assert_eq!(
            (inv.function.as_str(), inv.region.as_str()),
            (arn, "us-east-1")
        );
        assert_eq!(inv.credentials.access_key_id, "AKIDTEST");
        assert_eq!(c.aws.account_id, "000000000000");
        assert!(
            !format!("{c:?}").contains("sekrit"),
            "credentials never show"
        );

        // The API Gateway form, the region from the environment, the default HTTPS
        // endpoint.
        let apigw = format!(
            "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/{arn}/invocations"
        );
        let mut env = CREDS.to_vec();
        env.push(("AWS_DEFAULT_REGION", "localhost"));
        let endpoint = "[aws]\nlambda_endpoint = \"http://127.0.0.1:3001\"";
        let c = parse_env(&lambda_config(endpoint, &apigw), &env).unwrap();
        let IntegrationKind::Http(h) = &c.integrations[0].kind else {
            panic!("an HTTP integration");
        };
        assert_eq!(h.invoke.as_ref().unwrap().function, arn);
        // A stage variable in the ARN (an alias per stage).
        let text = lambda_config(
            endpoint,
            "arn:aws:lambda:us-east-1:1:function:chat:${stageVariables.alias}",
        )
        .replace(
            "name = \"t\"",
            "name = \"t\"\nstage_variables = { alias = \"live\" }",
        );
        let c = parse_env(&text, &env).unwrap();
        let IntegrationKind::Http(h) = &c.integrations[0].kind else {
            panic!("an HTTP integration");
        };
        assert_eq!(
            h.invoke.as_ref().unwrap().function,
            "arn:aws:lambda:us-east-1:1:function:chat:live"
        );
        // Without `lambda_endpoint`: the regional HTTPS endpoint (resolved at start,
        // which fails on a machine without DNS).
        match parse_env(&lambda_config("", &apigw), &env) {
            Ok(c) => {
                let IntegrationKind::Http(h) = &c.integrations[0].kind else {
                    panic!("an HTTP integration");
                };
                assert_eq!(h.uri.authority, "lambda.localhost.amazonaws.com");
                assert!(h.tls.is_some());
            }
            Err(e) => assert!(e.problem.contains("lambda.localhost.amazonaws.com"), "{e}"),
        }
        assert_eq!(c.aws.region.as_deref(), Some("localhost"));
    }

    #[test]
    fn lambda_uris_need_a_region_and_credentials() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:chat";
        let e = parse_env(&lambda_config("", arn), &CREDS).unwrap_err();
        assert_eq!(e.key, "integrations.fn.uri");
        assert!(e.problem.contains("region"), "{e}");
        let aws = "[aws]\nregion = \"us-east-1\"\nlambda_endpoint = \"http://127.0.0.1:3001\"";
        let e = parse_env(
            &lambda_config(aws, arn),
            &[("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")],
        )
        .unwrap_err();
        assert!(e.problem.contains("credentials"), "{e}");
        let e = parse_env(&lambda_config(aws, "arn:aws:lambda:x:1:function:"), &CREDS).unwrap_err();
        assert!(e.problem.contains("not a Lambda function ARN"), "{e}");
        let e = parse_env(
            &lambda_config(
                "[aws]\nregion = \"us-east-1\"\nlambda_endpoint = \"ftp://x\"",
                arn,
            ),
            &CREDS,
        )
        .unwrap_err();
        assert_eq!(e.key, "aws.lambda_endpoint");
        let e = parse_env(
            &lambda_config("[aws]\naccount_id = \"12\"", "http://127.0.0.1:1/"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "aws.account_id");
        let e = parse_str(&lambda_config("[aws]\nbogus = 1", "http://127.0.0.1:1/")).unwrap_err();
        assert!(e.problem.contains("bogus"), "{e}");
    }

    const ECHO: &str = r#"
[api]
name = "t"
stage = "prod"
[integrations.echo]
type = "mock"
response_template = "$input.body"
[routes."$default"]
integration = "echo"
route_response = true
"#;

    #[test]
    fn minimal_config_uses_aws_defaults() {
        let c = parse_str(ECHO).unwrap();
        assert_eq!(c.limits.max_frame_bytes, 32768);
        assert_eq!(c.limits.max_message_bytes, 131072);
        assert_eq!(c.limits.max_inflight_per_connection, 1024);
        assert!(!c.limits.allow_binary);
        assert_eq!(c.server.handshake_timeout, Duration::from_secs(5));
        assert_eq!(c.default_route, Some(0));
        assert_eq!(c.api.stage, "prod");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse_str(&format!("{ECHO}\n[limits]\nmax_frames = 3\n")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.toml: "), "{s}");
        assert!(s.contains("max_frames"), "{s}");
    }

    #[test]
    fn bad_duration_names_key() {
        let e = parse_str(&format!(
            "{ECHO}\n[server]\nhandshake_timeout = \"5 parsecs\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "server.handshake_timeout");
    }

    /// SPEC §16: `pipeline` defaults to 1, takes 1..64, and only on HTTP
    /// integrations.
    #[test]
    fn pipeline_is_validated() {
        let http = |line: &str| {
            format!(
                "{ECHO}\n[integrations.b]\ntype = \"http_proxy\"\nuri = \"http://127.0.0.1:9/\"\n{line}\n[routes.b]\nintegration = \"b\"\n"
            )
        };
        let pipeline = |c: &Config| match &c.integrations
            [c.routes.iter().find(|r| r.key == "b").unwrap().integration]
            .kind
        {
            IntegrationKind::Http(h) => h.pipeline,
            _ => unreachable!(),
        };
        assert_eq!(pipeline(&parse_str(&http("")).unwrap()), 1);
        assert_eq!(pipeline(&parse_str(&http("pipeline = 64")).unwrap()), 64);
        for bad in ["pipeline = 0", "pipeline = 65"] {
            let e = parse_str(&http(bad)).unwrap_err();
            assert_eq!(e.key, "integrations.b.pipeline", "{bad}");
            assert!(e.problem.contains("outside 1..64"), "{}", e.problem);
        }
        let e = parse_str(&format!(
            "{ECHO}\n[integrations.m]\ntype = \"mock\"\npipeline = 2\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "integrations.m.pipeline");
    }

    #[test]
    fn route_to_missing_integration_is_an_error() {
        let e = parse_str(&format!("{ECHO}\n[routes.join]\nintegration = \"nope\"\n")).unwrap_err();
        assert_eq!(e.key, "routes.\"join\".integration");
        assert!(e.problem.contains("nope"));
    }

    #[test]
    fn durations_are_bounded_and_deadlines_not_zero() {
        for (line, key, problem) in [
            (
                "idle_timeout = \"0s\"",
                "limits.idle_timeout",
                "longer than 0s",
            ),
            (
                "max_connection_duration = \"300000000000y\"",
                "limits.max_connection_duration",
                "longer than a year",
            ),
            (
                "pong_timeout = \"0ms\"",
                "limits.pong_timeout",
                "longer than 0s",
            ),
        ] {
            let e = parse_str(&format!("{ECHO}\n[limits]\n{line}\n")).unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.problem.contains(problem), "{line}: {}", e.problem);
        }
        let ok = parse_str(&format!(
            "{ECHO}\n[limits]\nping_interval = \"0s\"\nidle_timeout = \"365d\"\n"
        ));
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn unauthenticated_management_must_be_loopback() {
        let e = parse_str(&format!(
            "{ECHO}\n[management]\nlisten = \"0.0.0.0:9001\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "management.auth");
    }

    #[test]
    fn connections_on_the_api_listener_need_auth() {
        let e = parse_str(&format!("{ECHO}\n[management]\non_api_listener = true\n")).unwrap_err();
        assert_eq!(e.key, "management.on_api_listener");
        let c = parse_str(&format!(
            "{ECHO}\n[management]\non_api_listener = true\nauth = \"token\"\ntoken = \"t\"\n"
        ))
        .unwrap();
        assert!(c.management.on_api_listener);
    }

    #[test]
    fn public_paths_are_health_and_metrics_only() {
        let c = parse_str(&format!(
            "{ECHO}\n[management]\npublic_paths = [\"/metrics\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.management.public_paths,
            PublicPaths {
                health: false,
                metrics: true
            }
        );
        let e = parse_str(&format!(
            "{ECHO}\n[management]\npublic_paths = [\"/health\", \"/@connections\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "management.public_paths");
    }

    #[test]
    fn proxy_protocol_and_trusted_proxies_are_validated() {
        let c = parse_str(ECHO).unwrap();
        assert_eq!(c.server.proxy_protocol, crate::proxy_protocol::Mode::Off);
        assert!(c.server.trusted_proxies.is_empty());
        let c = parse_str(&format!(
            "{ECHO}\n[server]\nproxy_protocol = \"any\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n"
        ))
        .unwrap();
        assert_eq!(c.server.proxy_protocol, crate::proxy_protocol::Mode::Any);
        assert!(c
            .server
            .trusted_proxies
            .contains("10.9.8.7".parse().unwrap()));
        assert!(c.server.trusted_proxies.contains("::1".parse().unwrap()));
        assert!(!c
            .server
            .trusted_proxies
            .contains("127.0.0.1".parse().unwrap()));
        let e = parse_str(&format!("{ECHO}\n[server]\nproxy_protocol = \"v3\"\n")).unwrap_err();
        assert_eq!(e.key, "server.proxy_protocol");
        assert!(e.problem.contains("off, v1, v2, any"), "{}", e.problem);
        for bad in ["10.0.0.0/33", "10.0.0.1/8", "proxy.example"] {
            let e = parse_str(&format!(
                "{ECHO}\n[server]\ntrusted_proxies = [\"127.0.0.1\", \"{bad}\"]\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, "server.trusted_proxies");
            assert!(e.problem.contains(bad), "{}", e.problem);
        }
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            workers: Some(3),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = parse(Path::new("t.toml"), ECHO, &o).unwrap();
        assert_eq!(c.server.workers, 3);
        assert_eq!(c.server.listen.port(), 0);
    }

    #[test]
    fn https_uris_default_to_port_443_and_carry_their_tls_target() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("wsgate-cfg-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        let text = format!(
            "{ECHO}\n[integrations.up]\ntype = \"aws_proxy\"\nuri = \"https://127.0.0.1/ws\"\ntls_ca = {:?}\n\
             [integrations.plain]\ntype = \"aws_proxy\"\nuri = \"http://127.0.0.1/ws\"\n\
             [routes.a]\nintegration = \"up\"\n[routes.b]\nintegration = \"plain\"\n",
            path.display().to_string()
        );
        let c = parse_str(&text).unwrap();
        let http = |name: &str| match &c.integrations.iter().find(|i| i.name == name).unwrap().kind
        {
            IntegrationKind::Http(h) => h,
            _ => unreachable!(),
        };
        let up = http("up");
        assert_eq!(up.uri.addr.port(), 443);
        assert_eq!(up.uri.authority, "127.0.0.1", "the Host header as written");
        let tls = up.tls.as_ref().expect("an https URI has a TLS target");
        assert_eq!(tls.ca.as_deref(), Some(path.as_path()));
        assert_eq!(http("plain").uri.addr.port(), 80);
        assert!(http("plain").tls.is_none());
        assert!(c.describe_routes().contains("POST https://127.0.0.1/ws"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn throttling_defaults_to_unlimited_and_reads_every_key() {
        let c = parse_str(ECHO).unwrap();
        assert_eq!(c.throttling, Throttling::default());
        assert!(!c.throttling.connect.is_limited());
        let c = parse_str(&format!(
            "{ECHO}\n[routes.send]\nintegration = \"echo\"\nthrottling = {{ rate = 100, burst = 50 }}\n\
             [throttling]\nconnect_rate = 500\nconnect_burst = 1000\nrate = 10000\nburst = 5000\n\
             per_connection = {{ rate = 2.5, burst = 4 }}\n"
        ))
        .unwrap();
        let t = c.throttling;
        assert_eq!(t.connect, Limit::new(500.0, 1000.0));
        assert_eq!(t.stage, Limit::new(10000.0, 5000.0));
        assert_eq!(t.per_connection, Limit::new(2.5, 4.0));
        let send = c.routes.iter().find(|r| r.key == "send").unwrap();
        assert_eq!(send.throttling, Limit::new(100.0, 50.0));
        let table = c.describe_routes();
        assert!(
            table.contains("(mock status=200) throttling rate=100 burst=50\n"),
            "{table}"
        );
        let default = c.routes.iter().find(|r| r.key == "$default").unwrap();
        assert_eq!(default.throttling, Limit::UNLIMITED);
    }

    #[test]
    fn a_route_may_only_lower_the_stage_throttling() {
        let route = |limit: &str| {
            format!("{ECHO}\n[routes.send]\nintegration = \"echo\"\nthrottling = {{ {limit} }}\n")
        };
        let stage = "[throttling]\nrate = 100\nburst = 50\n";
        let e = parse_str(&format!("{}{stage}", route("rate = 200, burst = 10"))).unwrap_err();
        assert_eq!(e.key, "routes.\"send\".throttling.rate");
        assert!(e.problem.contains("only lower"), "{}", e.problem);
        let e = parse_str(&format!("{}{stage}", route("rate = 10, burst = 51"))).unwrap_err();
        assert_eq!(e.key, "routes.\"send\".throttling.burst");
        assert!(parse_str(&format!("{}{stage}", route("rate = 100, burst = 50"))).is_ok());
        // An unlimited stage lets a route set any limit.
        assert!(parse_str(&route("rate = 1000000, burst = 9")).is_ok());
        let e = parse_str(&route("rate = -1")).unwrap_err();
        assert_eq!(e.key, "routes.\"send\".throttling.rate");
        let e = parse_str(&route("rates = 1")).unwrap_err();
        assert!(e.to_string().contains("rates"), "{e}");
    }

    #[test]
    fn throttling_values_are_checked() {
        for (line, key) in [
            ("connect_rate = -5", "throttling.connect_rate"),
            ("burst = nan", "throttling.burst"),
            ("rate = inf", "throttling.rate"),
            (
                "per_connection = { rate = 1e12 }",
                "throttling.per_connection.rate",
            ),
        ] {
            let e = parse_str(&format!("{ECHO}\n[throttling]\n{line}\n")).unwrap_err();
            assert_eq!(e.key, key, "{line}");
        }
        let e = parse_str(&format!(
            "{ECHO}\n[routes.\"$connect\"]\nintegration = \"echo\"\nthrottling = {{ rate = 1 }}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "routes.\"$connect\".throttling");
        let e = parse_str(&format!("{ECHO}\n[throttling]\nmessages = 3\n")).unwrap_err();
        assert!(e.to_string().contains("messages"), "{e}");
    }
}
