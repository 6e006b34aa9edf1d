//! `wsgate import TEMPLATE` and `wsgate --template TEMPLATE` (SPEC §17): a
//! CloudFormation or SAM template's WebSocket API as a wsgate configuration.
//!
//! [`load`] reads YAML (short intrinsic tags) or JSON into one tree, [`resolve`]
//! evaluates intrinsics, parameters and conditions, [`convert`] maps the
//! `AWS::ApiGatewayV2::*` resources to the config's sections (warning, one line
//! per resource and property, about whatever it cannot express), and [`write`]
//! prints the commented TOML that [`crate::config::parse`] then reads.

pub mod convert;
pub mod load;
pub mod resolve;
pub mod write;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;

/// What the command line adds to the template.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--stage NAME`: the stage to serve when the API has several.
    pub stage: Option<String>,
    /// `--lambda-endpoint URL`: `[aws] lambda_endpoint`.
    pub lambda_endpoint: Option<String>,
    /// `--parameter KEY=VALUE`, in order.
    pub parameters: Vec<(String, String)>,
}

/// A converted template: the config text and the warning lines for stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Splits a `--parameter KEY=VALUE` argument.
pub fn parameter(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("--parameter {arg}: expected KEY=VALUE")),
    }
}

/// Converts template `text`; `source` names it in the output's header comment.
/// Errors name the problem (a YAML error also its line), on one line: template
/// text in them is escaped as in a comment ([`write::comment`]).
pub fn convert_text(source: &str, text: &str, opts: &Options) -> Result<Output, String> {
    convert_template(source, text, opts).map_err(|e| write::comment(&e))
}

fn convert_template(source: &str, text: &str, opts: &Options) -> Result<Output, String> {
    let template = load::parse(text)?;
    if !template.is_object() {
        return Err("the template is not a mapping".into());
    }
    let (gateway, warnings) = convert::convert(&template, opts)?;
    let pseudo: Vec<(&str, &str)> = resolve::PSEUDO.to_vec();
    let mut pseudo_now = Vec::new();
    for (k, default) in pseudo {
        let v = opts
            .parameters
            .iter()
            .rev()
            .find(|(p, _)| p == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or(default);
        pseudo_now.push((k, v));
    }
    Ok(Output {
        toml: write::toml(&gateway, source, &pseudo_now),
        // One line each on stderr, whatever the template's ids hold.
        warnings: warnings.iter().map(|w| write::comment(w)).collect(),
    })
}

/// The largest template file read (CloudFormation's own limit is 1 MB).
pub const MAX_TEMPLATE_BYTES: u64 = 16 << 20;

/// The file's text, refused past [`MAX_TEMPLATE_BYTES`] (it is never read whole).
fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TEMPLATE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TEMPLATE_BYTES {
        let e = format!("larger than {} MiB", MAX_TEMPLATE_BYTES >> 20);
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    }
    Ok(text)
}

/// Reads and converts the template at `path`.
pub fn convert_file(path: &std::path::Path, opts: &Options) -> Result<Output, String> {
    let shown = write::comment(&path.display().to_string());
    let text = read_bounded(path).map_err(|e| format!("{shown}: cannot read the template: {e}"))?;
    convert_text(&path.display().to_string(), &text, opts).map_err(|e| format!("{shown}: {e}"))
}
