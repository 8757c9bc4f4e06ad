//! The release steps around a file's upload (SPEC §6): look up, register when needed, then —
//! after the upload — publish and verify. [`super::carry_on`] calls them in that order.
//!
//! Invariants:
//! - Every step is retried like the upload, under the file's one `[retry]` budget: its
//!   attempts counted in the claim (per step, across restarts) against `max_attempts`, its
//!   time since the claim against `max_elapsed`.
//! - Each step's progress is saved in the claim ([`Progress`]) before the next begins, and a
//!   request is marked as sent before it goes out, so a restart never repeats a registration
//!   or an upload that succeeded: an outcome left unknown is settled by a query (a register by
//!   the look-up, a publish by the version's detail).
//! - Decisions follow what the queries answer, never an error code.

use std::future::Future;

use tokio::sync::OwnedSemaphorePermit;

use super::attempts::{Attempts, Counter, Judged};
use super::{Context, Draft, save};
use crate::config::Watch;
use crate::outcome::{Outcome, Report};
use crate::release::{Progress, Publication, Registration, Releaser, Reply, verdict_reason};
use crate::store::Claim;
use crate::upload::Answer;

/// What a file's release asks for, decided once its package is checked.
pub(super) struct Plan {
    /// Register the extension when CodeArts does not know it.
    pub register: bool,
    /// Publish the uploaded version.
    pub publish: bool,
    /// The extension's plugin_name.
    pub plugin_name: String,
    /// The business type sent with the upload.
    pub business_type: String,
    /// The manifest's version.
    pub version: String,
    /// The manifest's `friendlyName`.
    pub friendly_name: Option<String>,
    /// The manifest's `description`.
    pub description: Option<String>,
}

impl Plan {
    /// The plan for a file named by rule `rule`; `None` when neither `register` nor
    /// `publish` is on. The configuration turns the package check on whenever either is, so
    /// the manifest is there; without it (a bug) the file goes as a plain upload, loudly.
    /// Puts what the report says about the release so far into `draft`.
    pub fn of(
        watch: &Watch,
        rule: usize,
        plugin_name: &str,
        business_type: &str,
        manifest: Option<&crate::package::Manifest>,
        draft: &mut Draft,
    ) -> Option<Plan> {
        draft.release.version = manifest.map(|m| m.version.clone());
        let publish = watch.publishes(rule);
        // Until it happens, a publish asked for is a publish not done.
        draft.release.published = publish.then_some(false);
        if !watch.register && !publish {
            return None;
        }
        let Some(manifest) = manifest else {
            tracing::error!(watch = %watch.name, plugin_name, "register/publish without a checked package: uploading only");
            return None;
        };
        Some(Plan {
            register: watch.register,
            publish,
            plugin_name: plugin_name.to_owned(),
            business_type: business_type.to_owned(),
            version: manifest.version.clone(),
            friendly_name: manifest.friendly_name.clone(),
            description: manifest.description.clone(),
        })
    }
}

/// How a step ended when the file cannot go on to the next one.
pub(super) enum Halt {
    /// The file is decided: file it with this report.
    File(Box<Report>),
    /// The file stays claimed for the next start (shutdown, or `once` without usable
    /// credentials, or a claim record that cannot be written).
    Stay,
}

/// Why a step's retries ended without success.
enum StepEnd {
    /// A permanent refusal or a spent budget, in one clause.
    Failed { why: String, answer: Option<Answer> },
    /// The file stays claimed.
    Stay,
}

/// Looked up, and registered when needed: refuses before any upload what cannot succeed (an
/// unknown extension without `register`, a version that is already official).
pub(super) async fn look_up_and_register(
    ctx: &Context,
    watch: &Watch,
    claim: &mut Claim,
    draft: &mut Draft,
    plan: &Plan,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), Halt> {
    // Done before the upload, which the claim says happened already.
    if claim.record.release.uploaded.is_some() {
        return Ok(());
    }
    let name = plan.plugin_name.clone();
    let looked = step(ctx, watch, claim, "look-up", permit, |r: Releaser| {
        let name = name.clone();
        async move { r.versions(&name).await }
    })
    .await;
    let versions = match looked {
        Ok((versions, _)) => versions,
        Err(end) => return Err(halt(draft, end, "looking up the extension failed")),
    };
    let progress = &mut claim.record.release;
    if versions.exists() {
        // A register sent before a crash or a timeout: the look-up settles that it worked.
        if progress.register_sent && !progress.registered {
            progress.registered = true;
        }
        progress.display_name = versions.display_name().map(str::to_owned);
        draft.release.registered = progress.registered;
        if versions.is_formal(&plan.version) {
            ctx.metrics.release_step(&watch.name, "refused_official");
            tracing::info!(watch = %watch.name, file = %claim.record.rel_path, plugin_name = %plan.plugin_name, version = %plan.version, "version already official; refused before upload");
            return Err(Halt::File(Box::new(draft.failed(
                format!(
                    "version {} of {} is already published; {}: raise the version in codearts-extension.json",
                    plan.version,
                    plan.plugin_name,
                    crate::release::OFFICIAL_REFUSAL
                ),
                None,
            ))));
        }
        return save_progress(ctx, claim).await;
    }
    if !plan.register {
        return Err(Halt::File(Box::new(draft.failed(
            format!(
                "extension {} does not exist in CodeArts; register it or set register = true",
                plan.plugin_name
            ),
            None,
        ))));
    }

    // Registered: marked as sent first, so that a restart asks the look-up before sending
    // another.
    claim.record.release.register_sent = true;
    save_progress(ctx, claim).await?;
    let registration = Registration {
        plugin_name: plan.plugin_name.clone(),
        display_name: plan
            .friendly_name
            .clone()
            .unwrap_or_else(|| plan.plugin_name.clone()),
        business_type: plan.business_type.clone(),
        description: plan.description.clone().unwrap_or_default(),
    };
    let registered = step(ctx, watch, claim, "register", permit, |r: Releaser| {
        let registration = registration.clone();
        async move {
            match r.register(&registration).await {
                Ok(done) => Ok(done),
                // Whatever the answer said (a timeout, "exists" after a lost answer), the
                // look-up decides whether the extension is there now.
                Err(verdict) => match r.versions(&registration.plugin_name).await {
                    Ok((versions, answer)) if versions.exists() => Ok(((), answer)),
                    _ => Err(verdict),
                },
            }
        }
    })
    .await;
    if let Err(end) = registered {
        return Err(halt(draft, end, "registering the extension failed"));
    }
    claim.record.release.registered = true;
    draft.release.registered = true;
    ctx.metrics.release_step(&watch.name, "registered");
    tracing::info!(watch = %watch.name, file = %claim.record.rel_path, plugin_name = %plan.plugin_name, "extension registered");
    save_progress(ctx, claim).await
}

/// The done report of an upload the claim says succeeded before a restart, if it did: it is
/// never sent again.
pub(super) fn uploaded_before(claim: &Claim, draft: &Draft) -> Option<Report> {
    claim
        .record
        .release
        .uploaded
        .clone()
        .map(|answer| draft.done(answer))
}

/// Published, then verified (the version's attribution must be `formal`), when the plan
/// publishes and `report`, the upload's, is a success; otherwise `report` as it is. The
/// upload's success is recorded in the claim first, so that it is never repeated.
pub(super) async fn publish_and_verify(
    ctx: &Context,
    watch: &Watch,
    claim: &mut Claim,
    draft: &mut Draft,
    plan: &Plan,
    report: Report,
) -> Result<Report, Halt> {
    const FAILED: &str = "uploaded as a draft, but publishing failed";
    if !plan.publish || report.outcome != Outcome::Done {
        return Ok(report);
    }
    // The done report carries the upload's answer.
    let uploaded = Answer {
        status: report.http_status.unwrap_or(200),
        error_code: None,
        error_msg: None,
        request_id: report.request_id.clone(),
    };
    // Published and recorded before a restart that came ahead of the filing.
    if claim.record.release.published {
        draft.release.published = Some(true);
        return Ok(draft.done(uploaded));
    }
    claim.record.release.uploaded = Some(uploaded.clone());
    save_progress(ctx, claim).await?;
    let mut permit = None;
    let (name, version) = (plan.plugin_name.clone(), plan.version.clone());
    let is_formal = |r: Releaser, name: String, version: String| async move {
        r.detail(&name, &version)
            .await
            .map(|(detail, answer)| (detail.is_formal(&version), answer))
    };
    // A publish sent before a crash or a timeout: the version's detail settles it.
    let mut published = false;
    if claim.record.release.publish_sent {
        let settled = step(ctx, watch, claim, "verify", &mut permit, |r: Releaser| {
            is_formal(r, name.clone(), version.clone())
        })
        .await;
        match settled {
            Ok((formal, _)) => published = formal,
            Err(end) => return Err(halt(draft, end, FAILED)),
        }
    }
    if !published {
        claim.record.release.publish_sent = true;
        save_progress(ctx, claim).await?;
        let publication = Publication {
            plugin_name: plan.plugin_name.clone(),
            display_name: plan
                .friendly_name
                .clone()
                .or_else(|| claim.record.release.display_name.clone())
                .unwrap_or_else(|| plan.plugin_name.clone()),
            version: plan.version.clone(),
        };
        let sent = step(ctx, watch, claim, "publish", &mut permit, |r: Releaser| {
            let publication = publication.clone();
            async move {
                match r.publish(&publication).await {
                    Ok(done) => Ok(done),
                    // "Not a draft" after a lost answer, or a timeout: the detail decides.
                    Err(verdict) => {
                        match r
                            .detail(&publication.plugin_name, &publication.version)
                            .await
                        {
                            Ok((detail, answer)) if detail.is_formal(&publication.version) => {
                                Ok(((), answer))
                            }
                            _ => Err(verdict),
                        }
                    }
                }
            }
        })
        .await;
        if let Err(end) = sent {
            return Err(halt(draft, end, FAILED));
        }
        // Verified.
        let verified = step(ctx, watch, claim, "verify", &mut permit, |r: Releaser| {
            is_formal(r, name.clone(), version.clone())
        })
        .await;
        match verified {
            Ok((true, _)) => {}
            Ok((false, answer)) => {
                return Err(Halt::File(Box::new(draft.failed(
                    format!(
                        "{FAILED}: after publishing, version {} of {} is still not official",
                        plan.version, plan.plugin_name
                    ),
                    Some(answer),
                ))));
            }
            Err(end) => return Err(halt(draft, end, FAILED)),
        }
    }
    claim.record.release.published = true;
    draft.release.published = Some(true);
    ctx.metrics.release_step(&watch.name, "published");
    tracing::info!(watch = %watch.name, file = %claim.record.rel_path, plugin_name = %plan.plugin_name, version = %plan.version, "version published");
    save_progress(ctx, claim).await?;
    Ok(draft.done(uploaded))
}

/// A step's end as the file's halt: a failure's reason names the step (`what`).
fn halt(draft: &Draft, end: StepEnd, what: &str) -> Halt {
    match end {
        StepEnd::Failed { why, answer } => {
            Halt::File(Box::new(draft.failed(format!("{what}: {why}"), answer)))
        }
        StepEnd::Stay => Halt::Stay,
    }
}

async fn save_progress(ctx: &Context, claim: &mut Claim) -> Result<(), Halt> {
    match save(claim).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(file = %claim.record.rel_path, error = %e, "cannot update the claim record; the file stays claimed");
            ctx.error();
            Err(Halt::Stay)
        }
    }
}

/// One step's attempts until success, a permanent refusal or the end of the budget, judged as
/// the upload's are (see [`super::attempts`]), its attempts counted per step.
async fn step<T, F, Fut>(
    ctx: &Context,
    watch: &Watch,
    claim: &mut Claim,
    name: &'static str,
    permit: &mut Option<OwnedSemaphorePermit>,
    mut call: F,
) -> Result<(T, Answer), StepEnd>
where
    F: FnMut(Releaser) -> Fut,
    Fut: Future<Output = Reply<T>>,
{
    let progress: &mut Progress = &mut claim.record.release;
    if progress.step.as_deref() != Some(name) {
        progress.step = Some(name.to_owned());
        progress.step_attempts = 0;
    }
    let counter: Counter = |record| &mut record.release.step_attempts;
    let mut attempts = Attempts::begin(ctx, claim, name, counter, verdict_reason)
        .map_err(|why| StepEnd::Failed { why, answer: None })?;
    loop {
        let attempt = attempts
            .next(ctx, watch, claim, permit)
            .await
            .ok_or(StepEnd::Stay)?;
        tracing::info!(watch = %watch.name, file = %claim.record.rel_path, step = name, attempt, "release step");
        let releaser = ctx.settings().releaser.clone();
        match call(releaser).await {
            Ok(done) => {
                ctx.trouble.over();
                return Ok(done);
            }
            Err(verdict) => match attempts.judge(ctx, watch, claim, permit, verdict).await {
                Judged::Again => {}
                Judged::Stay => return Err(StepEnd::Stay),
                Judged::Failed { why, answer } => return Err(StepEnd::Failed { why, answer }),
            },
        }
    }
}
