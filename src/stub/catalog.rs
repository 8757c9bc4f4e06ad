//! The stand-in's memory of extensions: which are registered, their versions and each
//! version's attribution (SPEC §6), with the cloud's rules for changing them.
//!
//! Invariants:
//! - An extension has at most one draft, which a later upload replaces (a draft can be
//!   overwritten); official (`formal`) versions are never replaced nor removed.
//! - A version is never both the draft and official: publishing moves it from one to the other,
//!   and an upload of an official version is refused.
//! - Every refusal is a [`Refusal`] that the HTTP layer turns into a 400 with its code.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// What a version is, in the words of the list and detail answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribution {
    /// Registered, nothing uploaded yet (the entry has no version).
    Init,
    /// Uploaded, not published; may still be overwritten.
    Draft,
    /// Published; can never be replaced.
    Formal,
}

/// One row of the list answer, or the detail answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionRow {
    /// The extension's plugin_name.
    pub plugin_name: String,
    /// The extension's display name.
    pub display_name: String,
    /// `X.Y.Z`; empty for the `init` row of an extension without versions.
    pub version: String,
    /// The version's attribution.
    pub version_attribution: Attribution,
    /// The extension's business type.
    pub business_type: String,
    /// An id stable for the extension (32 hex digits).
    pub unique_id: String,
    /// Always `custom`: the stand-in holds only the tenant's own extensions.
    pub plugin_attribution: &'static str,
}

/// Why the catalog refuses a change: the `error_code` and `error_msg` of the 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The answer's `error_code`.
    pub error_code: &'static str,
    /// The answer's `error_msg`.
    pub error_msg: String,
}

/// The stand-in's error codes for the catalog's refusals (its own choice, in CodeArts' style:
/// the real codes are not documented, and clients must not rely on them).
pub mod refusal_codes {
    /// Registering a plugin_name that exists.
    pub const EXTENSION_EXISTS: &str = "DEVPIPE.00011005";
    /// Any call about a plugin_name that is not registered.
    pub const EXTENSION_NOT_FOUND: &str = "DEVPIPE.00011006";
    /// Uploading a version that is already official.
    pub const VERSION_OFFICIAL: &str = "DEVPIPE.00011007";
    /// Publishing a version that is not the draft.
    pub const NOT_A_DRAFT: &str = "DEVPIPE.00011008";
    /// Asking for the detail of a version the extension does not have.
    pub const VERSION_NOT_FOUND: &str = "DEVPIPE.00011009";
}

/// A registered extension.
#[derive(Clone, Debug)]
struct Extension {
    display_name: String,
    business_type: String,
    description: String,
    unique_id: String,
    draft: Option<String>,
    formal: BTreeSet<VersionKey>,
}

/// A version ordered by its numbers, so that "newest first" is numeric, not textual.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct VersionKey(Vec<u32>, String);

impl VersionKey {
    fn new(version: &str) -> Self {
        let numbers = version
            .split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect();
        Self(numbers, version.to_owned())
    }
}

/// The registered extensions, by plugin_name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    extensions: BTreeMap<String, Extension>,
}

impl Catalog {
    /// Whether `plugin_name` is registered.
    pub fn contains(&self, plugin_name: &str) -> bool {
        self.extensions.contains_key(plugin_name)
    }

    /// Registers an extension without versions; refused when it exists.
    pub fn register(
        &mut self,
        plugin_name: &str,
        display_name: &str,
        business_type: &str,
        description: &str,
    ) -> Result<(), Refusal> {
        if self.contains(plugin_name) {
            return Err(Refusal {
                error_code: refusal_codes::EXTENSION_EXISTS,
                error_msg: format!("The extension {plugin_name} already exists."),
            });
        }
        self.extensions.insert(
            plugin_name.to_owned(),
            Extension {
                display_name: display_name.to_owned(),
                business_type: business_type.to_owned(),
                description: description.to_owned(),
                unique_id: format!("{:032x}", fastrand::u128(..)),
                draft: None,
                formal: BTreeSet::new(),
            },
        );
        Ok(())
    }

    /// Puts `version` in the extension's draft, replacing any earlier draft.
    pub fn upload(&mut self, plugin_name: &str, version: &str) -> Result<(), Refusal> {
        let extension = self.extension_mut(plugin_name)?;
        if extension.formal.contains(&VersionKey::new(version)) {
            return Err(Refusal {
                error_code: refusal_codes::VERSION_OFFICIAL,
                error_msg: format!(
                    "Version {version} of {plugin_name} is already published and cannot be replaced."
                ),
            });
        }
        extension.draft = Some(version.to_owned());
        Ok(())
    }

    /// Makes the draft `version` official; refused unless `version` is the draft.
    pub fn publish(&mut self, plugin_name: &str, version: &str) -> Result<(), Refusal> {
        let extension = self.extension_mut(plugin_name)?;
        if extension.draft.as_deref() != Some(version) {
            return Err(Refusal {
                error_code: refusal_codes::NOT_A_DRAFT,
                error_msg: format!("Version {version} of {plugin_name} is not a draft."),
            });
        }
        extension.draft = None;
        extension.formal.insert(VersionKey::new(version));
        Ok(())
    }

    /// The extension's versions, newest first; one `init` row when it has none; empty when
    /// the extension is unknown (the list answer's `total` 0).
    pub fn versions(&self, plugin_name: &str) -> Vec<VersionRow> {
        let Some(extension) = self.extensions.get(plugin_name) else {
            return Vec::new();
        };
        let mut keyed: Vec<(VersionKey, Attribution)> = extension
            .formal
            .iter()
            .map(|key| (key.clone(), Attribution::Formal))
            .collect();
        if let Some(draft) = &extension.draft {
            keyed.push((VersionKey::new(draft), Attribution::Draft));
        }
        keyed.sort_by(|a, b| b.0.cmp(&a.0));
        let row = |version: String, attribution| VersionRow {
            plugin_name: plugin_name.to_owned(),
            display_name: extension.display_name.clone(),
            version,
            version_attribution: attribution,
            business_type: extension.business_type.clone(),
            unique_id: extension.unique_id.clone(),
            plugin_attribution: "custom",
        };
        if keyed.is_empty() {
            return vec![row(String::new(), Attribution::Init)];
        }
        keyed
            .into_iter()
            .map(|(key, attribution)| row(key.1, attribution))
            .collect()
    }

    /// One version's row; refused when the extension or the version is unknown.
    pub fn detail(&self, plugin_name: &str, version: &str) -> Result<VersionRow, Refusal> {
        if !self.contains(plugin_name) {
            return Err(not_found(plugin_name));
        }
        self.versions(plugin_name)
            .into_iter()
            .find(|row| row.version == version && row.version_attribution != Attribution::Init)
            .ok_or_else(|| Refusal {
                error_code: refusal_codes::VERSION_NOT_FOUND,
                error_msg: format!("Version {version} of {plugin_name} does not exist."),
            })
    }

    /// The description given at registration, for tests.
    pub fn description(&self, plugin_name: &str) -> Option<&str> {
        self.extensions
            .get(plugin_name)
            .map(|e| e.description.as_str())
    }

    fn extension_mut(&mut self, plugin_name: &str) -> Result<&mut Extension, Refusal> {
        self.extensions
            .get_mut(plugin_name)
            .ok_or_else(|| not_found(plugin_name))
    }
}

fn not_found(plugin_name: &str) -> Refusal {
    Refusal {
        error_code: refusal_codes::EXTENSION_NOT_FOUND,
        error_msg: format!("The extension {plugin_name} does not exist."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributions(catalog: &Catalog, name: &str) -> Vec<(String, Attribution)> {
        catalog
            .versions(name)
            .into_iter()
            .map(|r| (r.version, r.version_attribution))
            .collect()
    }

    #[test]
    fn an_extension_goes_from_init_to_draft_to_formal() {
        let mut catalog = Catalog::default();
        assert!(catalog.versions("demo").is_empty());
        catalog
            .register("demo", "Demo", "Deploy", "d")
            .expect("registers");
        assert_eq!(
            attributions(&catalog, "demo"),
            [(String::new(), Attribution::Init)]
        );
        catalog.upload("demo", "1.0.0").expect("uploads");
        catalog
            .upload("demo", "1.0.1")
            .expect("a draft is overwritten");
        assert_eq!(
            attributions(&catalog, "demo"),
            [("1.0.1".to_owned(), Attribution::Draft)]
        );
        catalog.publish("demo", "1.0.1").expect("publishes");
        catalog.upload("demo", "1.0.10").expect("uploads");
        assert_eq!(
            attributions(&catalog, "demo"),
            [
                ("1.0.10".to_owned(), Attribution::Draft),
                ("1.0.1".to_owned(), Attribution::Formal)
            ],
            "newest first, by number"
        );
        let detail = catalog.detail("demo", "1.0.1").expect("detail");
        assert_eq!(detail.version_attribution, Attribution::Formal);
    }

    #[test]
    fn the_cloud_rules_refuse_with_their_codes() {
        let mut catalog = Catalog::default();
        let code = |r: Result<(), Refusal>| r.expect_err("refused").error_code;
        assert_eq!(
            code(catalog.upload("ghost", "1.0.0")),
            refusal_codes::EXTENSION_NOT_FOUND
        );
        catalog.register("demo", "Demo", "Build", "").expect("ok");
        assert_eq!(
            code(catalog.register("demo", "Demo", "Build", "")),
            refusal_codes::EXTENSION_EXISTS
        );
        assert_eq!(
            code(catalog.publish("demo", "1.0.0")),
            refusal_codes::NOT_A_DRAFT
        );
        catalog.upload("demo", "1.0.0").expect("ok");
        catalog.publish("demo", "1.0.0").expect("ok");
        assert_eq!(
            code(catalog.upload("demo", "1.0.0")),
            refusal_codes::VERSION_OFFICIAL
        );
        assert_eq!(
            code(catalog.publish("demo", "1.0.0")),
            refusal_codes::NOT_A_DRAFT
        );
        assert_eq!(
            catalog
                .detail("demo", "2.0.0")
                .expect_err("no such")
                .error_code,
            refusal_codes::VERSION_NOT_FOUND
        );
    }
}
