//! Routes and their route responses, with the stage's per-route throttling.

use std::collections::BTreeMap;

use serde_json::Value;

use super::stage::complete;

use super::*;

pub(super) fn routes(
    c: &mut Convert,
    g: &mut Gateway,
    api: &str,
    w: &mut Vec<String>,
) -> Result<(), String> {
    let mut two_way = BTreeMap::new();
    for mut p in c.children("RouteResponse", api)? {
        let route = p.text("RouteId", w).unwrap_or_default();
        let key = p.text("RouteResponseKey", w).unwrap_or_default();
        if key != "$default" {
            p.warn(
                w,
                &format!(
                    "RouteResponseKey {key} is not supported ($default only); treated as $default"
                ),
            );
        }
        for k in [
            "ResponseModels",
            "ModelSelectionExpression",
            "ResponseParameters",
        ] {
            if p.take(k).is_some() {
                p.warn(
                    w,
                    &format!("{k} is not supported; route responses are not validated"),
                );
            }
        }
        two_way.insert(route, p.id.clone());
        p.finish(w, &[]);
    }
    for mut p in c.children("Route", api)? {
        let Some(key) = p.text("RouteKey", w) else {
            p.warn(w, "no RouteKey; route skipped");
            continue;
        };
        let target = p.text("Target", w);
        let integration = match target
            .as_deref()
            .and_then(|t| t.strip_prefix("integrations/"))
        {
            Some(i) if g.integrations.contains_key(i) => i.to_string(),
            _ => {
                let t = target.unwrap_or_else(|| "(none)".into());
                p.warn(
                    w,
                    &format!("Target {t} names no converted integration; route {key} skipped"),
                );
                continue;
            }
        };
        let mut r = Route {
            id: p.id.clone(),
            integration,
            ..Default::default()
        };
        let auth = p
            .text("AuthorizationType", w)
            .unwrap_or_else(|| "NONE".into());
        let authorizer = p.text("AuthorizerId", w);
        match auth.as_str() {
            "NONE" => {}
            "CUSTOM" => match authorizer {
                Some(a) if g.authorizers.contains_key(&a) && key == "$connect" => r.authorizer = Some(a),
                Some(a) if g.authorizers.contains_key(&a) => p.warn(w, &format!("AuthorizerId {a}: only $connect is authorized; ignored")),
                a => p.warn(w, &format!("AuthorizerId {} names no converted authorizer; the route is served without authorization", a.unwrap_or_default())),
            },
            other => p.warn(w, &format!("AuthorizationType {other} is not supported; the route is served without authorization")),
        }
        if p.take("AuthorizationScopes").is_some() {
            p.warn(w, "AuthorizationScopes is not supported; ignored");
        }
        if p.flag("ApiKeyRequired") {
            p.warn(
                w,
                "ApiKeyRequired is not supported; API keys are not checked",
            );
        }
        if let Some(Value::Object(m)) = p.take("RequestModels") {
            for (k, v) in text_map(Value::Object(m)) {
                if g.models.contains_key(&v) {
                    r.request_models.insert(k, v);
                } else {
                    p.warn(
                        w,
                        &format!("RequestModels {k}: no converted model named {v}; not validated"),
                    );
                }
            }
        }
        r.model_selection_expression = p.text("ModelSelectionExpression", w);
        if r.model_selection_expression.is_none() && r.request_models.len() == 1 {
            r.request_model = r.request_models.remove("$default");
        }
        let rrse = p.text("RouteResponseSelectionExpression", w);
        r.route_response = two_way.remove(&p.id).is_some();
        if rrse.is_some() && !r.route_response {
            p.warn(w, "RouteResponseSelectionExpression without an AWS::ApiGatewayV2::RouteResponse; the route stays one-way");
        }
        if p.take("RequestParameters").is_some() {
            p.warn(
                w,
                "RequestParameters (required route parameters) are not supported; not checked",
            );
        }
        if let Some(t) = c.route_settings.remove(&key) {
            match key.as_str() {
                "$connect" => g.connect_throttling = complete(t),
                "$disconnect" => p.warn(
                    w,
                    "RouteSettings.$disconnect throttling is not supported; ignored",
                ),
                _ => {
                    // What a route leaves unset, it takes from the stage's defaults.
                    let stage = g.throttling;
                    let mut t = complete(Throttle {
                        rate: t.rate.or(stage.rate),
                        burst: t.burst.or(stage.burst),
                    });
                    for (x, s, what) in [
                        (&mut t.rate, stage.rate, "ThrottlingRateLimit"),
                        (&mut t.burst, stage.burst, "ThrottlingBurstLimit"),
                    ] {
                        if let (Some(v), Some(s)) = (*x, s) {
                            if v > s {
                                p.warn(w, &format!("RouteSettings.{key}.{what} {v} is above the stage's {s}; lowered to it (a route may only lower the stage's limits)"));
                                *x = Some(s);
                            }
                        }
                    }
                    r.throttling = Some(t);
                }
            }
        }
        p.finish(w, &["OperationName"]);
        if let Some(old) = g.routes.insert(key.clone(), r) {
            warn(
                w,
                "Route",
                &old.id,
                &format!("RouteKey {key} is also the key of another route; replaced"),
            );
        }
    }
    for (route, id) in two_way {
        warn(
            w,
            "RouteResponse",
            &id,
            &format!("RouteId {route} names no converted route; ignored"),
        );
    }
    for key in c.route_settings.keys() {
        if let Some((id, _)) = &g.stage {
            warn(
                w,
                "Stage",
                id,
                &format!("RouteSettings.{key}: no route with this key; ignored"),
            );
        }
    }
    Ok(())
}
