//! The attempts of one request on a file's account — its upload, or one of its release steps —
//! until the server has judged it, under the file's one `[retry]` budget.
//!
//! One place decides what an answer means for the file, whatever the request: a permanent
//! refusal ends the attempts; a first 401 after which the credentials renew is free, a second
//! one is a transient failure; credentials that cannot be had make the file wait with the
//! attempt uncounted (the operator's to fix, not the file's); transient failures back off
//! until `max_attempts` or `max_elapsed`. Success is the caller's to take.
//!
//! Invariants: an attempt is counted and saved in the claim before it is sent, so a crash
//! mid-request still spends budget; a claim whose record cannot be saved sends nothing and
//! tries again after a pause; an attempt holds an upload slot while it runs and gives it back
//! while it waits; a stop ends the attempts with the file left claimed.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OwnedSemaphorePermit;

use super::{Context, Mode, save};
use crate::config::Watch;
use crate::retry::{Exhausted, Schedule};
use crate::store::{Claim, ClaimRecord};
use crate::upload::{Answer, Verdict};

/// The claim's counter a kind of request spends.
pub(super) type Counter = fn(&mut ClaimRecord) -> &mut u32;

/// What [`Attempts::judge`] made of a failed attempt.
pub(super) enum Judged {
    /// Try again now (the wait, if any, is over).
    Again,
    /// A permanent refusal or a spent budget, in one clause, with the server's last answer.
    Failed {
        /// Why, for the report.
        why: String,
        /// The answer that decided it, if there was one.
        answer: Option<Answer>,
    },
    /// The file stays claimed: a stop, or `once` without usable credentials.
    Stay,
}

/// The running account of one request's attempts.
pub(super) struct Attempts {
    what: &'static str,
    counter: Counter,
    refusal: fn(&Verdict) -> String,
    schedule: Schedule,
    resumed: Instant,
    before: Duration,
    free_retry_used: bool,
    credential_waits: u32,
    started: Instant,
}

impl Attempts {
    /// Opens the account of `what` (for the log), spending `counter`; `refusal` words a
    /// permanent refusal for the report. A request resumed after a stop whose last attempt
    /// was cut short may have spent the budget already: then `Err` says so, and nothing more
    /// is sent.
    pub(super) fn begin(
        ctx: &Context,
        claim: &mut Claim,
        what: &'static str,
        counter: Counter,
        refusal: fn(&Verdict) -> String,
    ) -> Result<Attempts, String> {
        let policy = ctx.settings().retry.clone();
        let claimed_at = humantime::parse_rfc3339(&claim.record.claimed_at)
            .unwrap_or_else(|_| SystemTime::now());
        let made = *counter(&mut claim.record);
        let attempts = Attempts {
            what,
            counter,
            refusal,
            schedule: Schedule::new(&policy, made),
            // The wall clock only bridges a restart; within this process the monotonic clock
            // counts, so that a clock stepped forward does not fail every file at once.
            resumed: Instant::now(),
            before: SystemTime::now()
                .duration_since(claimed_at)
                .unwrap_or_default(),
            free_retry_used: false,
            credential_waits: 0,
            started: Instant::now(),
        };
        let exhausted = if made >= policy.max_attempts {
            Some(Exhausted::Attempts(made))
        } else if made > 0 && attempts.spent(claim) > policy.max_elapsed {
            Some(Exhausted::Elapsed(policy.max_elapsed))
        } else {
            None
        };
        match exhausted {
            Some(exhausted) => Err(format!(
                "the last attempt was cut short when extdrop stopped; {exhausted}"
            )),
            None => Ok(attempts),
        }
    }

    /// Time on the file's own account: since its claim, less any wait for credentials.
    fn spent(&self, claim: &Claim) -> Duration {
        (self.before + self.resumed.elapsed())
            .saturating_sub(Duration::from_secs(claim.record.credential_wait_secs))
    }

    /// Takes an upload slot (unless `permit` holds one) and counts the next attempt in the
    /// claim; its number, or `None` when the file stays claimed.
    pub(super) async fn next(
        &mut self,
        ctx: &Context,
        watch: &Watch,
        claim: &mut Claim,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<u32> {
        loop {
            if permit.is_none() {
                *permit = Some(ctx.slot().await?);
            }
            if ctx.stopping() {
                return None;
            }
            *(self.counter)(&mut claim.record) += 1;
            match save(claim).await {
                Ok(()) => {
                    self.started = Instant::now();
                    return Some(*(self.counter)(&mut claim.record));
                }
                Err(e) => {
                    // Nothing is sent without its attempt on record (a crash would not count
                    // it): the attempt is taken back and tried again after a pause, without
                    // a slot meanwhile.
                    *(self.counter)(&mut claim.record) -= 1;
                    tracing::error!(watch = %watch.name, file = %claim.record.rel_path, error = %e, "cannot update the claim record; the {} is tried again after a pause", self.what);
                    *permit = None;
                    if ctx.mode == Mode::Once || !ctx.pause(ctx.io_retry_delay()).await {
                        ctx.error();
                        return None;
                    }
                }
            }
        }
    }

    /// Decides what a failed attempt (any verdict but the caller's success) means for the
    /// file, and waits where it must.
    pub(super) async fn judge(
        &mut self,
        ctx: &Context,
        watch: &Watch,
        claim: &mut Claim,
        permit: &mut Option<OwnedSemaphorePermit>,
        verdict: Verdict,
    ) -> Judged {
        let (why, answer, retry_after) = match verdict {
            Verdict::Uploaded(ref answer) | Verdict::Rejected { ref answer, .. } => {
                let answer = (answer.status != 0).then(|| answer.clone());
                return Judged::Failed {
                    why: (self.refusal)(&verdict),
                    answer,
                };
            }
            Verdict::Unauthorized { answer, stamp } => {
                let renewed = ctx.settings().uploader.auth().renew(stamp).await;
                ctx.metrics
                    .credential_renewal(if renewed.is_ok() { "ok" } else { "error" });
                match renewed {
                    Ok(()) if !self.free_retry_used => {
                        // The first 401 costs nothing: the credentials were simply stale.
                        self.free_retry_used = true;
                        self.uncount(claim).await;
                        return Judged::Again;
                    }
                    Ok(()) => (
                        "the server answered 401: the credentials were refused even after renewing them".to_owned(),
                        Some(answer),
                        None,
                    ),
                    Err(e) => return self.wait_for_credentials(ctx, watch, claim, permit, &e, Some(&answer)).await,
                }
            }
            Verdict::NoCredentials(e) => {
                return self
                    .wait_for_credentials(ctx, watch, claim, permit, &e, None)
                    .await;
            }
            Verdict::Transient {
                answer,
                why,
                retry_after,
            } => (why, answer, retry_after),
        };
        let attempt = *(self.counter)(&mut claim.record);
        match self
            .schedule
            .next_delay(attempt, self.spent(claim), retry_after)
        {
            Ok(delay) => {
                tracing::warn!(watch = %watch.name, file = %claim.record.rel_path, attempt, status = answer.as_ref().map(|a| a.status), why = %why, retry_in = ?delay, "{} failed; will retry", self.what);
                *permit = None;
                if ctx.pause(delay).await {
                    Judged::Again
                } else {
                    Judged::Stay
                }
            }
            Err(exhausted) => Judged::Failed {
                why: format!("{why}; {exhausted}"),
                answer,
            },
        }
    }

    /// Unusable credentials: nothing fresh to offer, the operator's to fix, not the file's.
    /// The attempt is taken back, the slot given up, and the file waits (see
    /// [`Context::wait_for_credentials`]); the wait is not the file's time.
    async fn wait_for_credentials(
        &mut self,
        ctx: &Context,
        watch: &Watch,
        claim: &mut Claim,
        permit: &mut Option<OwnedSemaphorePermit>,
        error: &crate::auth::AuthError,
        refusal: Option<&Answer>,
    ) -> Judged {
        self.uncount(claim).await;
        *permit = None;
        let waited = Instant::now();
        let go_on = ctx
            .wait_for_credentials(
                watch,
                claim,
                error,
                refusal,
                self.started,
                &mut self.credential_waits,
            )
            .await;
        claim.record.credential_wait_secs += waited.elapsed().as_secs();
        if go_on {
            Judged::Again
        } else {
            // What the wait cost is the file's to keep across the stop.
            self.save_quietly(claim).await;
            Judged::Stay
        }
    }

    /// Takes back an attempt that never got the server's judgement, on disk too, so that a
    /// file waiting for credentials when the daemon stops has not spent its budget.
    async fn uncount(&self, claim: &mut Claim) {
        *(self.counter)(&mut claim.record) -= 1;
        self.save_quietly(claim).await;
    }

    async fn save_quietly(&self, claim: &mut Claim) {
        if let Err(e) = save(claim).await {
            tracing::warn!(file = %claim.record.rel_path, error = %e, "cannot update the claim record; the attempt stays counted");
        }
    }
}
