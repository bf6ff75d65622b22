//! Triggers end to end with the real binary: an every-1s schedule fired by
//! `gleitzeit serve`, its runs listed by schedule and marked with what
//! started them, a real webhook called with its secret and with keys, and
//! bad input refused with its code.

mod common;
use common::{poll, Env, Server};
use serde_json::{json, Value};

const EVERY_SECOND: &str = "\
name: ticking
inputs: {n: 5}
triggers:
  - every: 1s
    overlap: allow_all
    inputs: {n: 7}
tasks:
  - id: fib
    method: fibonacci
    parameters: {n: \"${inputs.n}\"}
";

const HOOKED: &str = "\
name: hooked
inputs: {ticket: none}
triggers:
  - webhook: {name: new-ticket}
tasks:
  - id: words
    method: count_words
    parameters: {text: \"${inputs.ticket}\"}
";

fn runs_of(env: &Env, server: &str, schedule: &str) -> Vec<Value> {
    let listed = env
        .run(&[
            "--server",
            server,
            "--json",
            "list",
            "--schedule",
            schedule,
            "-n",
            "100",
        ])
        .ok()
        .json();
    listed.as_array().cloned().unwrap_or_default()
}

#[test]
fn serve_fires_an_every_second_schedule_and_lists_its_runs() {
    let env = Env::new();
    let flow = env.write("ticking.yaml", EVERY_SECOND);
    let server = Server::start(&env, &[]);
    let s = server.url.as_str();
    let added = env
        .run(&[
            "--server",
            s,
            "--json",
            "schedule",
            "add",
            flow.to_str().unwrap(),
        ])
        .ok()
        .json();
    let id = added["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(added["schedules"][0]["describe"], "every 1s");

    // Two runs of different ticks, each completed.
    let runs = poll::until(
        "two completed runs of the schedule",
        || runs_of(&env, s, &id),
        |runs| runs.iter().filter(|r| r["state"] == "completed").count() >= 2,
    );
    let run = runs.iter().find(|r| r["state"] == "completed").unwrap();
    let view = env
        .run(&["--server", s, "--json", "get", run["id"].as_str().unwrap()])
        .ok()
        .json();
    assert_eq!(view["trigger"]["kind"], "every");
    assert_eq!(view["trigger"]["id"], id.as_str());
    assert!(view["trigger"]["tick"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        view["tasks"][0]["result"].as_array().map(Vec::len),
        Some(7),
        "fibonacci(7): the trigger's input, not the default: {view}"
    );
    let events = env
        .run(&[
            "--server",
            s,
            "--json",
            "events",
            "--workflow",
            run["id"].as_str().unwrap(),
        ])
        .ok();
    let started: Value = events
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "workflow_started")
        .unwrap_or_else(|| panic!("no workflow_started in {}", events.stdout));
    assert_eq!(started["data"]["trigger"]["id"], id.as_str(), "{started}");
    let human = env
        .run(&["--server", s, "get", run["id"].as_str().unwrap()])
        .ok();
    assert!(
        human.stdout.contains(&format!("every of schedule {id}")),
        "{}",
        human.stdout
    );

    let listed = env
        .run(&["--server", s, "--json", "schedule", "list"])
        .ok()
        .json();
    let mine = &listed["schedules"][0];
    assert!(mine["fired"].as_u64().unwrap() >= 2, "{mine}");
    assert!(mine["next_fire"].is_string());
    let table = env.run(&["--server", s, "schedule", "list"]).ok();
    assert!(table.stdout.contains("UTC"), "{}", table.stdout);

    let metrics = poll::until(
        "fired ticks in /metrics",
        || env.run(&["--server", s, "health"]).stdout + &reqwest_get(&format!("{s}/metrics")),
        |text| text.contains("gleitzeit_schedule_ticks_total{outcome=\"fired\"}"),
    );
    assert!(metrics.contains("outcome=\"skipped\""));

    // Paused, it fires no more; removed, it is gone but its runs stay.
    let paused = env
        .run(&["--server", s, "--json", "schedule", "pause", &id[..10]])
        .ok()
        .json();
    assert_eq!(paused["paused"], true);
    env.run(&["--server", s, "schedule", "remove", &id]).ok();
    let gone = env.run(&["--server", s, "schedule", "pause", &id]).code(2);
    assert!(gone.stderr.contains("GZ3064"), "{}", gone.stderr);
    assert!(runs_of(&env, s, &id).len() >= 2);
}

fn reqwest_get(url: &str) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

fn post_hook(url: &str, headers: &[(&str, &str)], content_type: &str, body: &str) -> (u16, Value) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut request = reqwest::Client::new()
                .post(url)
                .header("content-type", content_type)
                .body(body.to_string());
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        })
}

#[test]
fn a_real_webhook_starts_runs_for_its_secret_or_a_service_key_only() {
    let env = Env::new();
    let admin = env.run(&["--json", "auth", "init"]).ok().json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // count_words is a built-in function; USER and SERVICE may submit it.
    let server = Server::spawn(&env, &[]);
    let s = server.url.as_str();
    let flow = env.write("hooked.yaml", HOOKED);
    let as_admin = |args: &[&str]| {
        let output = env
            .command()
            .env("GLEITZEIT_API_KEY", &admin)
            .args(args)
            .output()
            .unwrap();
        common::Run::from(output)
    };
    let added = as_admin(&[
        "--server",
        s,
        "--json",
        "schedule",
        "add",
        flow.to_str().unwrap(),
    ])
    .ok()
    .json();
    let secret = added["hook_secrets"][0]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let service_key = as_admin(&[
        "--server", s, "--json", "auth", "keys", "create", "ci", "--role", "SERVICE",
    ])
    .ok()
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    as_admin(&[
        "--server", s, "auth", "users", "create", "bob", "--role", "USER",
    ])
    .ok();
    let user_key = as_admin(&[
        "--server", s, "--json", "auth", "keys", "create", "bob", "--user", "bob",
    ])
    .ok()
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let hook = format!("{s}/api/v1/hooks/new-ticket");
    let other = format!("{s}/api/v1/hooks/no-such-hook");
    let json = "application/json";

    // The secret: 202 with the run, whose inputs are the body.
    let (status, started) = post_hook(
        &hook,
        &[("x-gleitzeit-hook-secret", &secret)],
        json,
        r#"{"ticket": "printer on fire"}"#,
    );
    assert_eq!(status, 202, "{started}");
    let run = started["workflow_id"].as_str().unwrap().to_string();
    let view = poll::until(
        "the webhook's run to complete",
        || {
            as_admin(&["--server", s, "--json", "get", &run])
                .ok()
                .json()
        },
        |v| v["state"] == "completed",
    );
    assert_eq!(view["trigger"]["kind"], "webhook");
    assert_eq!(view["tasks"][0]["result"]["words"], 3, "{view}");

    // A form body and a SERVICE key work too.
    let bearer = format!("Bearer {service_key}");
    let (status, _) = post_hook(
        &hook,
        &[("authorization", &bearer)],
        "application/x-www-form-urlencoded",
        "ticket=two+words",
    );
    assert_eq!(status, 202);

    // Without a key, a wrong secret and an unknown hook look the same.
    let (status, wrong) = post_hook(
        &hook,
        &[("x-gleitzeit-hook-secret", "ghs_wrong")],
        json,
        "{}",
    );
    let (status2, unknown) = post_hook(&other, &[("x-gleitzeit-hook-secret", &secret)], json, "{}");
    let (status3, none) = post_hook(&hook, &[], json, "{}");
    assert_eq!((status, status2, status3), (401, 401, 401));
    assert_eq!(wrong["code"], "GZ4010");
    assert_eq!(wrong, unknown, "no difference tells which hooks exist");
    assert_eq!(wrong, none);
    // With a key: an unknown hook is 404; a USER key may not call hooks.
    let (status, body) = post_hook(&other, &[("authorization", &bearer)], json, "{}");
    assert_eq!((status, body["code"].as_str()), (404, Some("GZ3065")));
    let user_bearer = format!("Bearer {user_key}");
    let (status, body) = post_hook(&hook, &[("authorization", &user_bearer)], json, "{}");
    assert_eq!((status, body["code"].as_str()), (403, Some("GZ4003")));
    // Bad bodies.
    let (status, body) = post_hook(&hook, &[("authorization", &bearer)], json, "not json");
    assert_eq!((status, body["code"].as_str()), (400, Some("GZ3066")));
    let (status, body) = post_hook(
        &hook,
        &[("authorization", &bearer)],
        json,
        &json!({"nope": 1}).to_string(),
    );
    assert_eq!((status, body["code"].as_str()), (400, Some("GZ3066")));

    // The key never shows in the listing; the hook's runs are listed by schedule.
    let listed = as_admin(&["--server", s, "schedule", "list"]).ok();
    assert!(
        listed.stdout.contains("webhook new-ticket"),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains(&secret[4..]));
    let id = added["schedules"][0]["schedule_id"].as_str().unwrap();
    let runs = as_admin(&["--server", s, "--json", "list", "--schedule", id])
        .ok()
        .json();
    assert_eq!(runs.as_array().unwrap().len(), 2);
}

#[test]
fn bad_triggers_are_refused_with_codes_locations_and_hints() {
    let env = Env::new();
    let flow = env.write(
        "bad.yaml",
        "name: bad\ntriggers:\n  - cron: \"0 25 * * *\"\n    timezone: Europe/Berln\n  - every: 500ms\ntasks:\n  - id: a\n    method: fibonacci\n    parameters: {n: 3}\n",
    );
    let f = flow.to_str().unwrap();
    let validated = env.run(&["validate", f]).code(2);
    assert!(
        validated.stdout.contains("GZ3061") || validated.stderr.contains("GZ3061"),
        "{}{}",
        validated.stdout,
        validated.stderr
    );
    let added = env.run(&["schedule", "add", f]).code(2);
    let all = added.stdout + &added.stderr;
    assert!(
        all.contains("bad.yaml:3:14") && all.contains("GZ3061"),
        "{all}"
    );
    assert!(
        all.contains("GZ3062") && all.contains("Europe/Berlin"),
        "{all}"
    );
    assert!(all.contains("GZ3063"), "{all}");

    let good = env.write("good.yaml", EVERY_SECOND);
    let g = good.to_str().unwrap();
    let every = env.run(&["schedule", "add", g, "--every", "0.2s"]).code(2);
    assert!(every.stderr.contains("GZ3063"), "{}", every.stderr);
    let cron = env.run(&["schedule", "add", g, "--cron", "* * *"]).code(2);
    assert!(cron.stderr.contains("GZ3061"), "{}", cron.stderr);
    let missing = env.run(&["schedule", "run-now", "sch_missing"]).code(2);
    assert!(missing.stderr.contains("GZ3064"), "{}", missing.stderr);

    // Locally: registered in the store, listed, backfilled, run now.
    let added = env
        .run(&["--json", "schedule", "add", g, "--every", "1h"])
        .ok()
        .json();
    let id = added["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = env.run(&["schedule", "list"]).ok();
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("every 1h"),
        "{}",
        listed.stdout
    );
    let range = env
        .run(&[
            "schedule",
            "backfill",
            &id,
            "--from",
            "2026-01-02",
            "--to",
            "2026-01-01",
        ])
        .code(2);
    assert!(range.stderr.contains("GZ3067"), "{}", range.stderr);
    let now = env.run(&["schedule", "run-now", &id, "--wait"]).ok();
    assert!(
        now.stdout.contains("completed") || now.stderr.contains("completed"),
        "{}{}",
        now.stdout,
        now.stderr
    );
    let runs = env.run(&["--json", "list", "--schedule", &id]).ok().json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
}
