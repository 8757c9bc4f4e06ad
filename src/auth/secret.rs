//! Secret values and where they come from.
//!
//! Job: find each secret (IAM token, password, access key, secret key, security token) in the
//! places the operator may have put it, read it, and re-read it when the server rejects it.
//!
//! Invariants:
//! - A secret is held only inside [`Secret`], whose `Debug` prints `Secret(***)` and which has
//!   no `Display`, so it cannot reach a log line or an error message by accident.
//! - The lookup order is fixed: the `*_file` key, then `$CREDENTIALS_DIRECTORY/<name>` (systemd
//!   `LoadCredential=`), then the `EXTDROP_*` environment variable, then (AK/SK only) the
//!   official SDK's variable (`HUAWEICLOUD_SDK_AK`, `_SK`, `_SECURITY_TOKEN`, SPEC §7), then
//!   (token only) the inline `token` key. The first place that is set wins; later places are
//!   not consulted.
//! - File contents lose their trailing whitespace (editors and `echo` add a newline); values
//!   from the environment or the config file are used exactly as written.
//! - Lookup never touches the process environment directly: callers pass an environment
//!   closure, so tests do not have to mutate global state.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::AuthError;

/// A secret string (token, password, key) that never prints itself.
///
/// `Debug` shows `Secret(***)`; there is no `Display`. Use [`Secret::expose`] at the one place
/// the value must go on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret value itself, for putting it into a request; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How one kind of secret is named in each place it can come from.
#[derive(Debug)]
pub(super) struct SecretKind {
    /// The operator's words for it, used in messages ("IAM token").
    pub what: &'static str,
    /// The `[auth]` key naming a file that holds it.
    pub file_key: &'static str,
    /// The `[auth]` key holding the value itself, where the config may carry it (token only).
    pub inline_key: Option<&'static str>,
    /// The file name under `$CREDENTIALS_DIRECTORY`.
    pub credential: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The official SDK's environment variable, read when `env` and the files are absent.
    pub sdk_env: Option<&'static str>,
    /// Whether the value goes into an HTTP header and so must be visible ASCII.
    pub header_safe: bool,
}

/// The ready IAM token of `method = "token"`.
pub(super) const TOKEN: SecretKind = SecretKind {
    what: "IAM token",
    file_key: "token_file",
    inline_key: Some("token"),
    credential: "token",
    env: "EXTDROP_TOKEN",
    sdk_env: None,
    header_safe: true,
};

/// The IAM user's password of `method = "password"`.
pub(super) const PASSWORD: SecretKind = SecretKind {
    what: "IAM password",
    file_key: "password_file",
    inline_key: None,
    credential: "password",
    env: "EXTDROP_PASSWORD",
    sdk_env: None,
    // It travels inside a JSON body, which can carry any text.
    header_safe: false,
};

/// The access key (AK) of `method = "aksk"`.
pub(super) const ACCESS_KEY: SecretKind = SecretKind {
    what: "access key",
    file_key: "access_key_file",
    inline_key: None,
    credential: "access_key",
    env: "EXTDROP_ACCESS_KEY",
    sdk_env: Some("HUAWEICLOUD_SDK_AK"),
    // It is written into the Authorization header.
    header_safe: true,
};

/// The secret key (SK) of `method = "aksk"`.
pub(super) const SECRET_KEY: SecretKind = SecretKind {
    what: "secret key",
    file_key: "secret_key_file",
    inline_key: None,
    credential: "secret_key",
    env: "EXTDROP_SECRET_KEY",
    sdk_env: Some("HUAWEICLOUD_SDK_SK"),
    // Only used as the HMAC key, never sent.
    header_safe: false,
};

/// The security token of temporary AK/SK credentials.
pub(super) const SECURITY_TOKEN: SecretKind = SecretKind {
    what: "security token",
    file_key: "security_token_file",
    inline_key: None,
    credential: "security_token",
    env: "EXTDROP_SECURITY_TOKEN",
    sdk_env: Some("HUAWEICLOUD_SDK_SECURITY_TOKEN"),
    header_safe: true,
};

/// Reads an environment variable; `std::env::var_os` in production, a map in tests.
pub(super) type EnvLookup<'a> = dyn Fn(&str) -> Option<OsString> + 'a;

/// The variable systemd sets to the folder holding `LoadCredential=` files.
pub(crate) const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Where a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// The file named by a `*_file` key.
    File(PathBuf),
    /// A systemd credential file under `$CREDENTIALS_DIRECTORY`.
    Credential(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// An `[auth]` key holding the value itself.
    Inline(&'static str),
}

impl Origin {
    /// The file to read again on renewal, if the secret came from one.
    fn path(&self) -> Option<&Path> {
        match self {
            Origin::File(path) | Origin::Credential(path) => Some(path),
            Origin::Env(_) | Origin::Inline(_) => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Credential(path) => write!(f, "systemd credential {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Inline(key) => write!(f, "the [auth] key {key}"),
        }
    }
}

/// One secret, where it came from and its current value.
#[derive(Debug, Clone)]
pub(super) struct Source {
    kind: &'static SecretKind,
    origin: Origin,
    value: Secret,
}

impl Source {
    /// Finds a required secret; its absence is an error naming every place it may be put.
    pub fn resolve(
        kind: &'static SecretKind,
        file: Option<&Path>,
        inline: Option<&Secret>,
        env: &EnvLookup<'_>,
    ) -> Result<Source, AuthError> {
        Self::resolve_optional(kind, file, inline, env)?.ok_or_else(|| {
            let keys = match kind.inline_key {
                Some(inline_key) => format!("{} or {inline_key}", kind.file_key),
                None => kind.file_key.to_owned(),
            };
            AuthError::MissingSecret {
                what: kind.what,
                keys,
                credential: kind.credential,
                env: match kind.sdk_env {
                    Some(sdk_env) => format!("{} (or the SDK's {sdk_env})", kind.env),
                    None => kind.env.to_owned(),
                },
            }
        })
    }

    /// Finds an optional secret (the security token): `Ok(None)` when no place holds one.
    pub fn resolve_optional(
        kind: &'static SecretKind,
        file: Option<&Path>,
        inline: Option<&Secret>,
        env: &EnvLookup<'_>,
    ) -> Result<Option<Source>, AuthError> {
        let Some(origin) = locate(kind, file, inline, env)? else {
            return Ok(None);
        };
        let value = match &origin {
            Origin::File(path) | Origin::Credential(path) => read_file(kind, path)?,
            Origin::Env(name) => match env(name).map(OsString::into_string) {
                Some(Ok(value)) => value,
                // `locate` saw the variable a moment ago; an odd encoding is the only way here.
                Some(Err(_)) | None => {
                    return Err(AuthError::SecretNotUnicode {
                        what: kind.what,
                        env: name,
                    });
                }
            },
            Origin::Inline(_) => inline.map(|s| s.expose().to_owned()).unwrap_or_default(),
        };
        let value = check(kind, &origin, value)?;
        Ok(Some(Source {
            kind,
            origin,
            value,
        }))
    }

    /// The current value.
    pub fn value(&self) -> &Secret {
        &self.value
    }

    /// Where the value came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Whether [`Source::reload`] can ever yield a different value (file-backed secrets).
    pub fn is_reloadable(&self) -> bool {
        self.origin.path().is_some()
    }

    /// Reads a file-backed secret again; `Ok(true)` when its value changed.
    ///
    /// Values from the environment or the config cannot change while the daemon runs, so for
    /// them this is a no-op answering `Ok(false)`.
    pub fn reload(&mut self) -> Result<bool, AuthError> {
        let Some(path) = self.origin.path() else {
            return Ok(false);
        };
        let value = check(self.kind, &self.origin, read_file(self.kind, path)?)?;
        let changed = value != self.value;
        self.value = value;
        Ok(changed)
    }
}

/// Decides which place holds the secret, without reading it yet.
fn locate(
    kind: &'static SecretKind,
    file: Option<&Path>,
    inline: Option<&Secret>,
    env: &EnvLookup<'_>,
) -> Result<Option<Origin>, AuthError> {
    if let Some(path) = file {
        return Ok(Some(Origin::File(path.to_path_buf())));
    }
    if let Some(dir) = env(CREDENTIALS_DIRECTORY).filter(|dir| !dir.is_empty()) {
        let path = PathBuf::from(dir).join(kind.credential);
        match std::fs::metadata(&path) {
            Ok(_) => return Ok(Some(Origin::Credential(path))),
            // systemd only creates the files it was asked to load; an absent one means
            // "look further", not an error.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) => {}
            Err(reason) => {
                return Err(AuthError::UnreadableSecret {
                    what: kind.what,
                    path,
                    reason,
                });
            }
        }
    }
    // An empty variable is how shells and unit files "unset" a value, so it does not count.
    // The SDK's name comes after extdrop's own, so that a value meant for extdrop wins over
    // one the environment carries for other tools.
    for name in std::iter::once(kind.env).chain(kind.sdk_env) {
        if env(name).is_some_and(|value| !value.is_empty()) {
            return Ok(Some(Origin::Env(name)));
        }
    }
    if let (Some(key), Some(_)) = (kind.inline_key, inline) {
        return Ok(Some(Origin::Inline(key)));
    }
    Ok(None)
}

/// Reads a secret file, dropping the trailing newline editors and `echo` leave behind.
///
/// This is blocking I/O even when called from async code: the files are a few bytes on a
/// local (often tmpfs) filesystem and are read only at start-up and after a 401.
fn read_file(kind: &SecretKind, path: &Path) -> Result<String, AuthError> {
    let mut value =
        std::fs::read_to_string(path).map_err(|reason| AuthError::UnreadableSecret {
            what: kind.what,
            path: path.to_path_buf(),
            reason,
        })?;
    value.truncate(value.trim_end().len());
    Ok(value)
}

/// Rejects values that can never work, so the operator hears about them at start-up.
fn check(kind: &SecretKind, origin: &Origin, value: String) -> Result<Secret, AuthError> {
    if value.is_empty() {
        return Err(AuthError::EmptySecret {
            what: kind.what,
            origin: origin.to_string(),
        });
    }
    if kind.header_safe && !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::SecretNotHeaderSafe {
            what: kind.what,
            origin: origin.to_string(),
        });
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An environment made of the given pairs only.
    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(*v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn debug_redacts() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(***))");
    }

    #[test]
    fn file_key_wins_over_everything_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "mine", "from-file\n\n");
        write(dir.path(), "token", "from-credentials");
        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
            ("EXTDROP_TOKEN", "from-env"),
        ]);
        let inline = Secret::new("inline".to_owned());
        let source = Source::resolve(&TOKEN, Some(&file), Some(&inline), &env).unwrap();
        assert_eq!(source.value().expose(), "from-file");
        assert_eq!(source.origin(), &Origin::File(file));
        assert!(source.is_reloadable());
    }

    #[test]
    fn credentials_directory_comes_before_env() {
        let dir = tempfile::tempdir().unwrap();
        let cred = write(dir.path(), "token", "from-credentials\r\n");
        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
            ("EXTDROP_TOKEN", "from-env"),
        ]);
        let source = Source::resolve(&TOKEN, None, None, &env).unwrap();
        assert_eq!(source.value().expose(), "from-credentials");
        assert_eq!(source.origin(), &Origin::Credential(cred));
    }

    #[test]
    fn absent_credential_file_falls_through_to_env_then_inline() {
        let dir = tempfile::tempdir().unwrap();
        let dir_str = dir.path().to_str().unwrap();
        let inline = Secret::new("inline".to_owned());

        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", dir_str),
            ("EXTDROP_TOKEN", "from-env"),
        ]);
        let source = Source::resolve(&TOKEN, None, Some(&inline), &env).unwrap();
        assert_eq!(source.value().expose(), "from-env");
        assert_eq!(source.origin(), &Origin::Env("EXTDROP_TOKEN"));
        assert!(!source.is_reloadable());

        // An empty variable counts as unset.
        let env = env_of(&[("CREDENTIALS_DIRECTORY", dir_str), ("EXTDROP_TOKEN", "")]);
        let source = Source::resolve(&TOKEN, None, Some(&inline), &env).unwrap();
        assert_eq!(source.value().expose(), "inline");
        assert_eq!(source.origin(), &Origin::Inline("token"));
    }

    #[test]
    fn missing_secret_names_every_place() {
        let err = Source::resolve(&TOKEN, None, None, &env_of(&[])).unwrap_err();
        let text = err.to_string();
        for needle in ["token_file", "EXTDROP_TOKEN", "`token`", "LoadCredential"] {
            assert!(text.contains(needle), "{text:?} lacks {needle}");
        }
        assert!(!err.is_transient());

        let err = Source::resolve(&PASSWORD, None, None, &env_of(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("password_file") && text.contains("EXTDROP_PASSWORD"));

        // The optional security token is simply absent.
        let none = Source::resolve_optional(&SECURITY_TOKEN, None, None, &env_of(&[])).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn unreadable_file_names_file_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Source::resolve(&PASSWORD, Some(&missing), None, &env_of(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&*missing.to_string_lossy()), "{text}");
        assert!(text.contains("No such file"), "{text}");
        assert!(!err.is_transient());
    }

    #[test]
    fn empty_and_unsendable_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "empty", "\n");
        let err = Source::resolve(&TOKEN, Some(&empty), None, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");

        let env = env_of(&[("EXTDROP_TOKEN", "two words")]);
        let err = Source::resolve(&TOKEN, None, None, &env).unwrap_err();
        assert!(err.to_string().contains("HTTP header"), "{err}");
        assert!(!err.to_string().contains("two words"), "{err}");

        // Passwords may hold any text.
        let env = env_of(&[("EXTDROP_PASSWORD", "pass wörd ")]);
        let source = Source::resolve(&PASSWORD, None, None, &env).unwrap();
        assert_eq!(source.value().expose(), "pass wörd ");
    }

    #[test]
    fn reload_reports_changes_only_for_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "token", "one\n");
        let mut source = Source::resolve(&TOKEN, Some(&file), None, &env_of(&[])).unwrap();
        assert!(!source.reload().unwrap());
        write(dir.path(), "token", "two\n");
        assert!(source.reload().unwrap());
        assert_eq!(source.value().expose(), "two");

        let env = env_of(&[("EXTDROP_TOKEN", "env")]);
        let mut source = Source::resolve(&TOKEN, None, None, &env).unwrap();
        assert!(!source.reload().unwrap());
    }

    /// SPEC §7: the SDK's names are read only when the `*_file` key, the systemd credential
    /// and the `EXTDROP_*` variable are all absent.
    #[test]
    fn sdk_variables_come_after_extdrops_own() {
        let env = env_of(&[
            ("HUAWEICLOUD_SDK_AK", "sdk-ak"),
            ("HUAWEICLOUD_SDK_SK", "sdk-sk"),
            ("HUAWEICLOUD_SDK_SECURITY_TOKEN", "sdk-token"),
        ]);
        for (kind, value, name) in [
            (&ACCESS_KEY, "sdk-ak", "HUAWEICLOUD_SDK_AK"),
            (&SECRET_KEY, "sdk-sk", "HUAWEICLOUD_SDK_SK"),
            (
                &SECURITY_TOKEN,
                "sdk-token",
                "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            ),
        ] {
            let source = Source::resolve(kind, None, None, &env).unwrap();
            assert_eq!(source.value().expose(), value);
            assert_eq!(source.origin(), &Origin::Env(name));
        }

        // extdrop's own variable wins; an empty one counts as unset.
        let env = env_of(&[
            ("EXTDROP_ACCESS_KEY", "own-ak"),
            ("HUAWEICLOUD_SDK_AK", "sdk-ak"),
            ("EXTDROP_SECRET_KEY", ""),
            ("HUAWEICLOUD_SDK_SK", "sdk-sk"),
        ]);
        let source = Source::resolve(&ACCESS_KEY, None, None, &env).unwrap();
        assert_eq!(source.value().expose(), "own-ak");
        let source = Source::resolve(&SECRET_KEY, None, None, &env).unwrap();
        assert_eq!(source.value().expose(), "sdk-sk");

        // A file key and a systemd credential win over both.
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "ak-file", "file-ak\n");
        write(dir.path(), "secret_key", "credential-sk\n");
        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
            ("HUAWEICLOUD_SDK_AK", "sdk-ak"),
            ("HUAWEICLOUD_SDK_SK", "sdk-sk"),
        ]);
        let source = Source::resolve(&ACCESS_KEY, Some(&file), None, &env).unwrap();
        assert_eq!(source.value().expose(), "file-ak");
        let source = Source::resolve(&SECRET_KEY, None, None, &env).unwrap();
        assert_eq!(source.value().expose(), "credential-sk");

        // Tokens and passwords have no SDK name; the missing-key message names both variables.
        let env = env_of(&[("HUAWEICLOUD_SDK_AK", "sdk-ak")]);
        assert!(Source::resolve(&TOKEN, None, None, &env).is_err());
        let err = Source::resolve(&SECRET_KEY, None, None, &env_of(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("EXTDROP_SECRET_KEY") && text.contains("HUAWEICLOUD_SDK_SK"),
            "{text}"
        );
    }
}
