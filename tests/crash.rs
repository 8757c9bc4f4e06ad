//! Crashes and shutdowns: nothing lost, nothing uploaded twice.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, SystemTime};

use extdrop::stub::Fault;
use rustix::process::Signal;

use crate::harness::{self, Sandbox};

#[test]
fn kill_9_during_uploads_then_restart_files_everything_exactly_once() {
    let s = Sandbox::new();
    // The first two uploads never get an answer: the daemon is killed while they hang.
    s.faults([Fault::Hang, Fault::Hang]);
    let names: Vec<String> = (0..5).map(|i| format!("crash{i}")).collect();
    for name in &names {
        s.drop_named(name, "Build");
    }
    let mut daemon = s.start();
    s.wait_until("two uploads hanging", Some(&daemon), || {
        s.stub.uploads_started() >= 2
    });
    daemon.kill9();
    assert!(s.claims() >= 2, "the hanging files are claimed");

    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let expected: Vec<String> = names.iter().map(|n| format!("{n}__Build.zip")).collect();
    assert_eq!(s.files("done"), expected, "every file once, no ~2 copies");
    assert!(s.files("inbox").is_empty());
    assert_eq!(s.claims(), 0);
    for name in &names {
        assert_eq!(s.accepted(name), 1, "{name} accepted exactly once");
    }
}

#[test]
fn a_decided_claim_is_filed_without_uploading_again() {
    // The state a crash leaves between "the server said true" and "the file was moved".
    let s = Sandbox::new();
    let config = extdrop::config::Config::load(&s.write_config()).expect("config");
    let watch = &config.watches[0];
    s.drop_named("already", "Build");
    let mut claim = extdrop::store::claim(watch, "already__Build.zip", SystemTime::now())
        .expect("claim")
        .expect("claimed");
    let now = extdrop::outcome::timestamp(SystemTime::now());
    claim.record.attempts = 1;
    claim.record.decided = Some(extdrop::store::Decision {
        dest_name: Some("already__Build.zip".to_owned()),
        report: extdrop::outcome::Report {
            file: "already__Build.zip".to_owned(),
            watch: "extensions".to_owned(),
            outcome: extdrop::outcome::Outcome::Done,
            plugin_name: Some("already".to_owned()),
            business_type: Some("Build".to_owned()),
            size: 1,
            sha256: None,
            attempts: 1,
            http_status: Some(200),
            error_code: None,
            error_msg: None,
            request_id: Some("r".to_owned()),
            reason: None,
            first_seen: now.clone(),
            finished: now,
            release: Default::default(),
        },
    });
    claim.save().expect("save");
    drop(claim);

    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert!(s.requests().is_empty(), "not uploaded again");
    assert_eq!(s.files("done"), ["already__Build.zip"]);
    assert_eq!(s.report("done", "already__Build.zip")["request_id"], "r");
    assert_eq!(s.claims(), 0);
}

#[test]
fn sigterm_exits_0_and_loses_nothing() {
    let s = Sandbox::new();
    s.faults([Fault::Delay(Duration::from_millis(800))]);
    let mut daemon = s.start();
    for i in 0..4 {
        s.drop_named(&format!("term{i}"), "Build");
    }
    s.wait_until("an upload in flight", Some(&daemon), || {
        s.stub.uploads_started() >= 1
    });
    daemon.signal(Signal::TERM);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    // The upload in flight was allowed to finish within the grace period.
    let first = s.requests()[0].plugin_name.clone().expect("plugin name");
    assert!(
        s.files("done").contains(&format!("{first}__Build.zip")),
        "log:\n{}",
        daemon.log()
    );

    // Whatever was not finished is still in the inbox or claimed; the next run files it all.
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done").len(), 4);
    assert_eq!(s.claims(), 0);
    assert!(s.files("inbox").is_empty());
    let mut accepted: Vec<_> = s
        .stub
        .uploads()
        .into_iter()
        .filter_map(|u| u.plugin_name)
        .collect();
    accepted.sort();
    assert_eq!(
        accepted,
        ["term0", "term1", "term2", "term3"],
        "each uploaded exactly once"
    );
}

#[test]
fn a_work_folder_file_without_its_record_goes_to_failed_with_a_reason() {
    // What a hand-edited or damaged work folder leaves: a claimed file whose record is gone.
    let s = Sandbox::new();
    let dir = s.path("inbox/.extdrop/lost-claim");
    std::fs::create_dir_all(&dir).expect("claim folder");
    std::fs::write(dir.join("file"), b"contents of unknown origin").expect("payload");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    assert!(s.requests().is_empty(), "never uploaded blindly");
    assert_eq!(s.files("failed"), ["recovered-lost-claim"]);
    assert_eq!(
        std::fs::read(s.path("failed/recovered-lost-claim")).expect("kept"),
        b"contents of unknown origin"
    );
    let reason = s.report("failed", "recovered-lost-claim")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("claim record"), "{reason}");
    assert_eq!(s.claims(), 0);
}

#[test]
fn a_filing_that_fails_is_tried_again_until_it_works() {
    let s = Sandbox::new();
    let daemon = s.start();
    // `done` becomes unusable: a plain file stands where the folder was.
    std::fs::remove_dir_all(s.path("done")).expect("remove done");
    std::fs::write(s.path("done"), b"in the way").expect("block done");
    s.drop_named("blocked", "Build");
    daemon.wait_for_log("cannot file");
    assert_eq!(s.claims(), 1, "the uploaded file waits in the work folder");
    std::fs::remove_file(s.path("done")).expect("unblock done");
    s.wait_until("the file in done and its claim gone", Some(&daemon), || {
        s.files("done") == ["blocked__Build.zip"] && s.claims() == 0
    });
    assert_eq!(s.requests().len(), 1, "filed without a second upload");
    assert_eq!(s.report("done", "blocked__Build.zip")["outcome"], "done");
    assert_eq!(s.claims(), 0);
}

#[test]
fn a_second_once_never_takes_a_running_daemons_inbox() {
    let s = Sandbox::new();
    let _daemon = s.start();
    let (code, log) = s.once();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!(
            "another extdrop process (pid {} on ",
            _daemon.pid()
        )) && log.contains("is handling inbox"),
        "the refusal names the holder: {log}"
    );
}

/// Regression: a file whose last attempt a crash cut short got one attempt more than
/// `max_attempts` after the restart, and one more after every further crash.
#[test]
fn a_claim_resumed_with_its_budget_spent_goes_to_failed_without_another_attempt() {
    let s = Sandbox::new();
    let config = extdrop::config::Config::load(&s.write_config()).expect("config");
    s.drop_named("spent", "Build");
    let mut claim =
        extdrop::store::claim(&config.watches[0], "spent__Build.zip", SystemTime::now())
            .expect("claim")
            .expect("claimed");
    claim.record.attempts = 5; // the sandbox's max_attempts
    claim.save().expect("save");
    drop(claim);
    let (code, _) = s.once();
    assert_eq!(code, 2);
    assert!(s.requests().is_empty(), "no sixth attempt");
    let report = s.report("failed", "spent__Build.zip");
    assert_eq!(report["attempts"], 5);
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("max_attempts"), "{reason}");
}

/// Crash anywhere: rounds of a burst of files with random server faults, each round ended by
/// `kill -9` at a random moment of a burst (a random number of its files filed, a random few
/// milliseconds more), then a restart. In the end every package is in done exactly
/// once or in failed with a reason, no claim is left, and a package accepted twice by the
/// server was accepted the first time just before a kill: the one window README documents
/// (the server committed the upload, the daemon died before writing the decision down).
///
/// `EXTDROP_CRASH_ROUNDS` sets the number of rounds (CI runs the short default) and
/// `EXTDROP_CRASH_SEED` replays a run; the seed is printed when it fails.
#[test]
fn killed_at_random_moments_every_package_still_lands_exactly_once() {
    let rounds: usize = std::env::var("EXTDROP_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("EXTDROP_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut s = Sandbox::new();
    s.upload = "concurrency = 3".to_owned();
    s.settle = "50ms".to_owned();
    s.retry = "initial_delay = \"20ms\"\nmax_delay = \"100ms\"\njitter = 0.0\nmax_attempts = 50\nmax_elapsed = \"5m\"".to_owned();
    let mut names = Vec::new();
    let mut kills = Vec::new();
    let mut logs = Vec::new();
    // Rounds whose kill left work behind (claims or files waiting): the test is vacuous
    // without them.
    let mut interrupted = 0;
    for round in 0..rounds {
        let mut daemon = s.start();
        s.faults((0..rng.usize(0..6)).map(|_| match rng.u8(0..4) {
            0 => Fault::status(503),
            1 => Fault::Drop,
            2 => Fault::Delay(Duration::from_millis(rng.u64(50..400))),
            _ => Fault::status(429),
        }));
        let filed_before = s.files("done").len() + s.files("failed").len();
        let dropped = rng.usize(8..24);
        for i in 0..dropped {
            let name = format!("crash{round}x{i}");
            s.drop_named(&name, "Build");
            names.push(name);
        }
        // The moment is picked by progress, not by the clock (a faster daemon would finish
        // a burst before a timed kill): once a random number of this round's files is filed,
        // at least six still to go, then a little later, so that the kill meets the others
        // anywhere in their lives.
        let progress = rng.usize(0..=dropped - 6);
        s.wait_until("the round's progress", Some(&daemon), || {
            s.files("done").len() + s.files("failed").len() >= filed_before + progress
        });
        std::thread::sleep(Duration::from_millis(rng.u64(0..20)));
        daemon.kill9();
        // After the process is gone: whatever it sent, it sent before this.
        kills.push(std::time::Instant::now());
        logs.push(daemon.log());
        if s.claims() > 0 || !s.files("inbox").is_empty() {
            interrupted += 1;
        }
    }
    let daemon = s.start();
    let total = names.len();
    s.wait_until("every package filed", Some(&daemon), || {
        s.files("done").len() + s.files("failed").len() == total
            && s.claims() == 0
            && s.files("inbox").is_empty()
    });
    let context = format!("seed {seed} (EXTDROP_CRASH_SEED={seed} replays it)");
    eprintln!("{interrupted} of {rounds} kills interrupted work; {context}");
    assert!(
        interrupted * 3 >= rounds,
        "only {interrupted} of {rounds} kills interrupted work; {context}"
    );
    let mut filed: Vec<String> = s.files("done");
    filed.extend(s.files("failed"));
    filed.sort();
    let mut expected: Vec<String> = names.iter().map(|n| format!("{n}__Build.zip")).collect();
    expected.sort();
    assert_eq!(
        filed, expected,
        "each package filed once, under its own name; {context}"
    );
    for name in s.files("failed") {
        let reason = s.report("failed", &name)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !reason.is_empty(),
            "{name} failed without a reason; {context}"
        );
    }
    let uploads = s.stub.uploads();
    for name in &names {
        let accepted: Vec<_> = uploads
            .iter()
            .filter(|u| u.plugin_name.as_deref() == Some(name.as_str()))
            .collect();
        for (earlier, twice) in accepted.iter().zip(accepted.iter().skip(1)) {
            // The earlier acceptance raced a kill: the daemon that sent it died before it could
            // write its decision down (no daemon ever filed it), and it was sent before that
            // kill (the stand-in may read a dead client's last bytes a moment later).
            let answered = earlier.answered.expect("an accepted upload was answered");
            let never_filed = !logs
                .iter()
                .chain(std::iter::once(&daemon.log()))
                .any(|log| log.contains(&format!("request_id=\"{}\"", earlier.request_id)));
            let in_window = never_filed
                && kills.iter().any(|kill| {
                    earlier.received <= *kill + Duration::from_millis(500)
                        && (answered >= *kill
                            || kill.duration_since(answered) < Duration::from_secs(2))
                });
            let kills_after: Vec<_> = kills
                .iter()
                .map(|k| format!("{:?}", k.checked_duration_since(earlier.received)))
                .collect();
            assert!(
                in_window,
                "{name} accepted again ({}) although its earlier acceptance (answered {:?} after it was received) did not race a kill (kills after its receipt: {kills_after:?}); {context}\nthe last daemon's log of it:\n{}",
                twice.request_id,
                answered.duration_since(earlier.received),
                daemon
                    .log()
                    .lines()
                    .filter(|l| l.contains(name.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    drop(daemon);
}

/// Issue 9: filing shares one `syncfs` among every file at the same step (group commit). A
/// SIGKILL while such a round runs — its other callers waiting on it — must still leave every
/// file filed exactly once, with its report, and never upload a decided file again.
#[test]
fn killed_in_the_middle_of_a_group_commit_every_file_is_filed_once_with_its_report() {
    killed_in_group_commits(false, None);
}

/// The same, with every round fsyncing its callers' files and folders one by one (as it does
/// while the system holds much dirty data) instead of one `syncfs`.
#[test]
fn killed_in_the_middle_of_a_round_of_fsyncs_every_file_is_filed_once_with_its_report() {
    killed_in_group_commits(true, None);
}

/// The same on a slow disk (30 ms more per fsync): each round then gathers most of a batch,
/// and a batch is served by a few rounds only, the kills among them.
#[test]
fn killed_in_a_group_commit_on_a_slow_disk_every_file_is_filed_once_with_its_report() {
    if harness::slow_disk() {
        killed_in_group_commits(true, Some(Duration::from_millis(30)));
    }
}

fn killed_in_group_commits(one_by_one: bool, slow_fsync: Option<Duration>) {
    let mut s = Sandbox::new();
    s.slow_fsync = slow_fsync;
    // The mode is chosen by the system's dirty data, which a build running beside the tests
    // can push either way: each test fixes it.
    let limit = if one_by_one { 0 } else { u64::MAX };
    let mode = vec![("EXTDROP_DIRTY_LIMIT".to_owned(), limit.to_string())];
    s.upload = "concurrency = 8".to_owned();
    let mut names = Vec::new();
    let mut biggest_batch = 0usize;
    let mut kills = 0;
    // The n-th round that serves several files (claims or filings) is where the kill lands.
    // How many shared rounds a batch takes is the disk's to say: a slow one gathers more
    // callers behind each round, so fewer rounds (three, on one CI machine) serve the batch.
    // A batch whose n-th shared round never comes is filed whole with no kill; the test then
    // asks only that enough of the others were killed in shared rounds.
    for (round, nth) in [1u32, 2, 3, 5].into_iter().enumerate() {
        let batch: Vec<String> = (0..30).map(|i| format!("gc{round}x{i}")).collect();
        for name in &batch {
            s.drop_named(name, "Build");
        }
        names.extend(batch);
        s.env = vec![(
            "EXTDROP_FAULTS".to_owned(),
            format!("point=commit.round,path=shared,nth={nth},kill"),
        )];
        s.env.extend(mode.clone());
        let mut daemon = s.spawn_run();
        let all_filed = || s.files("done").len() == names.len() && s.claims() == 0;
        let status = daemon.wait_exit_unless(all_filed);
        let log = daemon.log();
        assert_eq!(
            log.contains("fsyncing one by one"),
            one_by_one,
            "the rounds ran in the mode asked for; log:\n{log}"
        );
        let Some(status) = status else {
            let shared = rounds(&log).filter(|callers| *callers > 1).count();
            assert!(
                shared < nth as usize,
                "the batch was filed whole although its shared round {nth} came; log:\n{log}"
            );
            eprintln!("batch {round}: {shared} shared rounds, so none number {nth}: no kill");
            daemon.signal(Signal::TERM);
            assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log());
            continue;
        };
        kills += 1;
        assert_eq!(
            status.signal(),
            Some(Signal::KILL.as_raw()),
            "killed at round {nth}; log:\n{log}"
        );
        // The round it died in: the last one begun.
        let callers = rounds(&log)
            .last()
            .unwrap_or_else(|| panic!("no group commit logged before the kill:\n{log}"));
        assert!(callers > 1, "killed in a shared round: {callers}");
        biggest_batch = biggest_batch.max(callers);
        // What the kill left decided (the server's answer written down) is never sent again.
        let decided = decided_claims(&s);

        s.env = mode.clone();
        let (code, log) = s.once();
        assert_eq!(code, 0, "{log}");
        assert!(s.files("inbox").is_empty(), "{log}");
        assert_eq!(s.claims(), 0, "no claim left");
        for name in &decided {
            assert_eq!(
                s.accepted(name),
                1,
                "{name}: decided before the kill, sent once"
            );
        }
    }
    assert!(
        kills >= 2,
        "only {kills} of 4 batches were killed in a shared round"
    );
    assert!(
        biggest_batch >= 3,
        "no kill landed in a round shared by many files (largest: {biggest_batch})"
    );
    let expected: Vec<String> = {
        let mut all: Vec<String> = names.iter().map(|n| format!("{n}__Build.zip")).collect();
        all.sort();
        all
    };
    assert_eq!(s.files("done"), expected, "every file once, no ~2 copies");
    assert!(s.files("failed").is_empty());
    for name in &names {
        let report = s.report("done", &format!("{name}__Build.zip"));
        assert_eq!(report["outcome"], "done", "{name}");
        assert!(s.accepted(name) >= 1, "{name}");
    }
}

/// The callers of each group-commit round a daemon's log shows, in order.
fn rounds(log: &str) -> impl Iterator<Item = usize> + '_ {
    log.lines()
        .filter_map(|l| l.split("group commit").nth(1))
        .filter_map(|l| l.split("callers=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
}

/// The plugin names of the claims whose record holds a decision.
fn decided_claims(s: &Sandbox) -> Vec<String> {
    std::fs::read_dir(s.path("inbox/.extdrop"))
        .into_iter()
        .flatten()
        .flatten()
        // Hidden folders are no claims: those kept for reuse hold a filed claim's old record.
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read(e.path().join("claim.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|r| !r["decided"].is_null())
        .filter_map(|r| {
            r["rel_path"]
                .as_str()
                .and_then(|p| p.strip_suffix("__Build.zip"))
                .map(str::to_owned)
        })
        .collect()
}
