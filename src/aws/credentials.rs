//! AWS credentials for signing Lambda calls (SPEC §12), found as the AWS SDKs find
//! them: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) in
//! the environment, else the `AWS_PROFILE` (or `default`) profile of the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`).
//! Loaded once at start. The secret and the token never reach a log or an error:
//! `Debug` redacts them, and errors name only the file, the profile and the key.

use std::fmt;
use std::path::{Path, PathBuf};

/// A key pair and an optional session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// Loads credentials from the process environment or the shared file.
    pub fn load() -> Result<Credentials, String> {
        Credentials::load_from(&|k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// As [`Credentials::load`], with `env` standing for the environment.
    pub fn load_from(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, String> {
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                return Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: env("AWS_SESSION_TOKEN"),
                })
            }
            (Some(_), None) => {
                return Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into())
            }
            (None, Some(_)) => {
                return Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into())
            }
            (None, None) => {}
        }
        let path =
            match env("AWS_SHARED_CREDENTIALS_FILE") {
                Some(p) => PathBuf::from(p),
                None => match env("HOME") {
                    Some(home) => Path::new(&home).join(".aws").join("credentials"),
                    None => return Err(
                        "no AWS credentials: AWS_ACCESS_KEY_ID is not set and there is no HOME \
                         for ~/.aws/credentials"
                            .into(),
                    ),
                },
            };
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "no AWS credentials: AWS_ACCESS_KEY_ID is not set and {} cannot be read: {e}",
                path.display()
            )
        })?;
        from_profile(&text, &profile).map_err(|p| format!("{}: {p}", path.display()))
    }
}

/// Reads profile `name` of a shared credentials file: `[name]` sections of
/// `key = value` lines, `#` and `;` comments. Errors name keys, never values.
pub fn from_profile(text: &str, name: &str) -> Result<Credentials, String> {
    let (mut found, mut in_profile) = (false, false);
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let section = section.split(']').next().unwrap_or("").trim();
            in_profile = section == name;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    if !found {
        return Err(format!("no profile [{name}]"));
    }
    let filled = |v: Option<String>| v.filter(|v| !v.is_empty());
    Ok(Credentials {
        access_key_id: filled(id)
            .ok_or_else(|| format!("profile [{name}] has no aws_access_key_id"))?,
        secret_access_key: filled(secret)
            .ok_or_else(|| format!("profile [{name}] has no aws_secret_access_key"))?,
        session_token: filled(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\n\
        aws_secret_access_key=sekrit-default\n\n; another\n[dev]\n  aws_access_key_id = AKIDDEV \n\
        aws_secret_access_key = sekrit-dev\naws_session_token = tok-dev\nregion = eu-west-1\n";

    fn env_of<'a>(pairs: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_environment_wins() {
        let env = [
            ("AWS_ACCESS_KEY_ID", "AKIDENV".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "sekrit-env".to_string()),
            ("AWS_SESSION_TOKEN", "tok".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_string()),
        ];
        let c = Credentials::load_from(&env_of(&env)).unwrap();
        assert_eq!(c.access_key_id, "AKIDENV");
        assert_eq!(c.secret_access_key, "sekrit-env");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        let e = Credentials::load_from(&env_of(&env[..1])).unwrap_err();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[test]
    fn profiles_are_read_from_the_shared_file() {
        let dir = std::env::temp_dir().join(format!("wsgate-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        std::fs::write(&path, FILE).unwrap();
        let file = ("AWS_SHARED_CREDENTIALS_FILE", path.display().to_string());
        let c = Credentials::load_from(&env_of(std::slice::from_ref(&file))).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKIDDEFAULT", "sekrit-default")
        );
        assert_eq!(c.session_token, None);
        let env = [file.clone(), ("AWS_PROFILE", "dev".to_string())];
        let c = Credentials::load_from(&env_of(&env)).unwrap();
        assert_eq!(c.access_key_id, "AKIDDEV");
        assert_eq!(c.session_token.as_deref(), Some("tok-dev"));
        let env = [file, ("AWS_PROFILE", "nope".to_string())];
        let e = Credentials::load_from(&env_of(&env)).unwrap_err();
        assert!(e.contains("no profile [nope]"), "{e}");
        // ~/.aws/credentials through HOME.
        std::fs::create_dir_all(dir.join(".aws")).unwrap();
        std::fs::write(dir.join(".aws/credentials"), FILE).unwrap();
        let env = [("HOME", dir.display().to_string())];
        assert_eq!(
            Credentials::load_from(&env_of(&env)).unwrap().access_key_id,
            "AKIDDEFAULT"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_never_show() {
        let c = from_profile(FILE, "dev").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDDEV"), "{shown}");
        assert!(
            !shown.contains("sekrit") && !shown.contains("tok-dev"),
            "{shown}"
        );
        let e = from_profile("[x]\naws_access_key_id = A\n", "x").unwrap_err();
        assert!(e.contains("aws_secret_access_key"), "{e}");
        let e = from_profile("[x]\naws_secret_access_key = sekrit\n", "x").unwrap_err();
        assert!(!e.contains("sekrit"), "{e}");
    }
}
