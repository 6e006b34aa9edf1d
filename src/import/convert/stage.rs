//! The chosen `AWS::ApiGatewayV2::Stage`: its name, stage variables, throttling
//! (`DefaultRouteSettings`, `RouteSettings`) and access log format.

use serde_json::{Map, Value};

use super::*;

pub(super) fn throttle(
    p: &Props,
    s: &Map<String, Value>,
    w: &mut Vec<String>,
    what: &str,
) -> Throttle {
    let mut t = Throttle::default();
    for (k, v) in s {
        match k.as_str() {
            "ThrottlingRateLimit" => t.rate = number(v),
            "ThrottlingBurstLimit" => t.burst = number(v),
            "DataTraceEnabled" | "DetailedMetricsEnabled" if v == &Value::Bool(false) => {}
            "LoggingLevel" if v == "OFF" => {}
            "DetailedMetricsEnabled" => p.warn(w, &format!("{what}.DetailedMetricsEnabled is not supported; wsgate's metrics are on the management API's /metrics")),
            "LoggingLevel" | "DataTraceEnabled" => p.warn(w, &format!("{what}.{k} is not supported; execution logs are wsgate's own (--log-level)")),
            _ => p.warn(w, &format!("{what}.{k} is not supported; ignored")),
        }
    }
    t
}

/// A bucket needs both numbers: a burst AWS would take from its account default
/// becomes the rate's (at least 1).
pub(super) fn complete(mut t: Throttle) -> Throttle {
    if let (Some(r), None) = (t.rate, t.burst) {
        t.burst = Some(r.ceil().max(1.0));
    }
    t
}

pub(super) fn stage(
    c: &mut Convert,
    g: &mut Gateway,
    api: &str,
    opts: &Options,
    w: &mut Vec<String>,
) -> Result<(), String> {
    let mut stages = c.children("Stage", api)?;
    let names: Vec<String> = stages
        .iter()
        .map(|s| {
            s.map
                .get("StageName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let pick = match (&opts.stage, stages.len()) {
        (None, 0) => {
            warn(
                w,
                "Api",
                api,
                "no AWS::ApiGatewayV2::Stage; clients connect to / (pick a path with --stage NAME)",
            );
            return Ok(());
        }
        (Some(s), 0) => {
            g.stage = Some((String::new(), s.clone()));
            return Ok(());
        }
        (None, 1) => 0,
        (None, _) => {
            return Err(format!(
                "the API {api} has several stages ({}): pick one with --stage NAME",
                names.join(", ")
            ))
        }
        (Some(s), _) => names.iter().position(|n| n == s).ok_or_else(|| {
            format!(
                "--stage {s}: the API {api} has no such stage (stages: {})",
                names.join(", ")
            )
        })?,
    };
    let mut p = stages.swap_remove(pick);
    let name = p.text("StageName", w).unwrap_or_default();
    g.stage = Some((p.id.clone(), name));
    if let Some(v) = p.take("StageVariables") {
        g.stage_variables = text_map(v);
    }
    if let Some(Value::Object(d)) = p.take("DefaultRouteSettings") {
        g.throttling = complete(throttle(&p, &d, w, "DefaultRouteSettings"));
    }
    if let Some(Value::Object(rs)) = p.take("RouteSettings") {
        for (key, s) in rs {
            if let Value::Object(s) = s {
                let t = throttle(&p, &s, w, &format!("RouteSettings.{key}"));
                c.route_settings.insert(key, t);
            }
        }
    }
    if let Some(Value::Object(mut a)) = p.take("AccessLogSettings") {
        if a.remove("DestinationArn").is_some() {
            p.warn(w, "AccessLogSettings.DestinationArn is not supported; access log lines go to wsgate's access_log.path (stdout)");
        }
        if let Some(Value::String(f)) = a.remove("Format") {
            match crate::access_log::Format::compile(&f) {
                Ok(_) => g.access_log_format = Some(f),
                Err(e) => p.warn(
                    w,
                    &format!("AccessLogSettings.Format: {}; access logging left off", e.0),
                ),
            }
        }
        for k in a.keys() {
            p.warn(
                w,
                &format!("AccessLogSettings.{k} is not supported; ignored"),
            );
        }
    }
    if let Some(v) = p.take("ClientCertificateId") {
        let _ = v;
        p.warn(w, "ClientCertificateId is not supported; wsgate does not present a client certificate to backends");
    }
    p.finish(w, &["AutoDeploy", "DeploymentId", "Description", "Tags"]);
    Ok(())
}
