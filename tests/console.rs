//! The web console in a real browser: Debian's chromium, headless, driven over the DevTools
//! protocol (the `headless_chrome` crate) against a running vigil.
//!
//! With `VIGIL_SCREENSHOTS=DIR` the desktop and phone screenshots are also written to DIR (the
//! README's come from `VIGIL_SCREENSHOTS=docs/images cargo test --release --test console`).

mod common;

use common::*;
use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption as Shot;
use headless_chrome::{Browser, LaunchOptions, Tab};
use opencv::core::Vector;
use opencv::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The system chromium, or `None` (with a note) outside CI when it is not installed.
fn chromium() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/chromium");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").is_err(),
        "chromium is not installed (scripts/setup.sh installs it)"
    );
    eprintln!("skipped: /usr/bin/chromium is not installed (scripts/setup.sh installs it)");
    None
}

fn browser(path: PathBuf, size: (u32, u32)) -> Browser {
    Browser::new(
        LaunchOptions::default_builder()
            .path(Some(path))
            .headless(true)
            // Tests run as root in CI's containers, where chromium's sandbox cannot start.
            .sandbox(false)
            .window_size(Some(size))
            .idle_browser_timeout(Duration::from_secs(300))
            .build()
            .unwrap(),
    )
    .expect("chromium starts")
}

/// The value of a JavaScript expression (promises awaited), as JSON.
fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("(async () => JSON.stringify((await ({expr})) ?? null))()");
    let r = tab.evaluate(&wrapped, true).unwrap();
    match r.value {
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
        other => panic!("{expr}: {other:?}"),
    }
}

/// Waits until `expr` is truthy (an exception counts as not yet: an image between two
/// pictures, an element not there yet); returns its value.
fn until(tab: &Tab, what: &str, limit: Duration, expr: &str) -> Value {
    let end = Instant::now() + limit;
    loop {
        let v = js(
            tab,
            &format!(
                "(async () => {{ try {{ return await ({expr}) }} catch (e) {{ return null }} }})()"
            ),
        );
        if !(v.is_null() || v == Value::Bool(false) || v == 0 || v == "") {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn text_of(tab: &Tab, selector: &str) -> String {
    js(
        tab,
        &format!(
            "document.querySelector({}).textContent",
            Value::from(selector)
        ),
    )
    .as_str()
    .unwrap_or("")
    .to_string()
}

fn save_screenshot(png: &[u8], name: &str) {
    if let Ok(dir) = std::env::var("VIGIL_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(name), png).unwrap();
    }
}

/// In a screenshot: the pixels of drawn face boxes' colours (green for a name, amber for unknown
/// or undecided), and the spread of brightness (near 0 for a blank picture).
fn box_pixels(png: &[u8]) -> (usize, f64) {
    let img =
        opencv::imgcodecs::imdecode(&Vector::from_slice(png), opencv::imgcodecs::IMREAD_COLOR)
            .unwrap();
    let (mut boxed, mut sum, mut sum2, mut n) = (0usize, 0f64, 0f64, 0f64);
    for y in 0..img.rows() {
        for x in 0..img.cols() {
            let p = *img.at_2d::<opencv::core::Vec3b>(y, x).unwrap();
            let (b, g, r) = (p[0] as i32, p[1] as i32, p[2] as i32);
            let green = (b - 80).abs() < 40 && (g - 220).abs() < 35 && (r - 80).abs() < 40;
            let amber = b < 60 && (g - 190).abs() < 35 && r > 215;
            if green || amber {
                boxed += 1;
            }
            let v = (b + g + r) as f64 / 3.0;
            sum += v;
            sum2 += v * v;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (boxed, (sum2 / n - mean * mean).max(0.0).sqrt())
}

/// The default config's two streams (looped, in real time, so they run while the browser
/// looks), its models, faces with snapshots, an empty gallery, and the API without tokens.
fn default_streams_config(dir: &Path) -> PathBuf {
    let faces = faces_yaml(&dir.join("gallery.json")).replace(
        "faces:\n  enabled: true\n",
        &format!(
            "faces:\n  enabled: true\n  sample_fps: 5\n  snapshots: {}\n",
            dir.join("snaps").display()
        ),
    );
    std::fs::create_dir_all(dir.join("snaps")).unwrap();
    let yaml = format!(
        "streams:\n  - {{id: bunny, url: '{bunny}', branches: [action], loop: true, realtime: true}}\n  - {{id: photos, url: '{photos}', branches: [faces], loop: true, realtime: true}}\napi:\n  listen: '127.0.0.1:0'\n  state_dir: {state}\n{action}  smoother: {{min_duration_ms: 0, start_threshold: 0.2, end_threshold: 0.1}}\n{faces}sinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\n{runtime}",
        bunny = built("media/bigbuckbunny.mp4").display(),
        photos = built("media/faces_demo.mp4").display(),
        state = dir.join("state").display(),
        action = action_yaml(),
        runtime = runtime_yaml(),
    );
    write_config(dir, &yaml)
}

#[test]
fn the_console_shows_streams_previews_and_live_events_enrols_and_removes() {
    let Some(chrome) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = default_streams_config(dir.path());
    let (child, _, addr, _logs) = start_api(&cfg);
    let url = format!("http://{addr}/");

    let b = browser(chrome.clone(), (1280, 900));
    let tab = b.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(60));
    tab.navigate_to(&url)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    // Dialogs (remove's confirmation) are answered yes; an alert would be recorded.
    js(
        &tab,
        "(window.confirm = () => true, window.alert = (m) => { window.alerted = String(m) }, 1)",
    );

    // Both streams, with their state, from the API.
    until(
        &tab,
        "both stream cards up",
        Duration::from_secs(60),
        "['bunny', 'photos'].every(id => { const c = document.querySelector(`.stream[data-id=\"${id}\"] .state`); return c && c.dataset.state === 'up' })",
    );
    assert!(text_of(&tab, ".stream[data-id=\"photos\"] .state").starts_with("up"));
    assert!(text_of(&tab, "#summary").contains("2 of 2 streams up"));

    // The preview of the face stream: a picture, with a drawn box once a face is tracked.
    until(
        &tab,
        "a preview of the photos stream",
        Duration::from_secs(30),
        "document.querySelector('.stream[data-id=\"photos\"] img.preview').naturalWidth > 0",
    );
    // The page scales the preview down, thinning the drawn lines: the boxes are counted on the
    // picture the page received, at its own size (read back from a canvas), as pixels of the
    // boxes' green or amber. The demo's own frames at that size have at most 122 such pixels
    // (its gold curtains); a drawn box and its label give over a thousand.
    let boxed = until(
        &tab,
        "a face box drawn on the preview",
        Duration::from_secs(40),
        "(() => { const img = document.querySelector('.stream[data-id=\"photos\"] img.preview'); \
         if (!img.complete || !img.naturalWidth) return false; const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight; \
         const g = c.getContext('2d'); g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data; \
         let n = 0; for (let i = 0; i < d.length; i += 4) { const [r, gr, b] = [d[i], d[i + 1], d[i + 2]]; \
         if ((Math.abs(r - 80) < 40 && Math.abs(gr - 220) < 35 && Math.abs(b - 80) < 40) || (b < 60 && Math.abs(gr - 190) < 35 && r > 215)) n++; } \
         return n >= 300 && n; })()",
    );
    // And a screenshot of the preview as shown is a picture, not a blank (the demo has black
    // gaps between its photos: screenshots are taken until one falls on a photo).
    let preview = tab
        .find_element(".stream[data-id=\"photos\"] img.preview")
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let (shown, spread) = loop {
        let (shown, spread) = box_pixels(&preview.capture_screenshot(Shot::Png).unwrap());
        if spread > 10.0 || Instant::now() > end {
            break (shown, spread);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "preview: {boxed} box-coloured pixels received, {shown} as shown; brightness spread {spread:.1}"
    );
    assert!(
        spread > 10.0,
        "the preview stays blank (spread {spread:.1})"
    );
    // The preview refreshes (a new object URL at least twice a second).
    let first = js(
        &tab,
        "document.querySelector('.stream[data-id=\"photos\"] img.preview').src",
    );
    std::thread::sleep(Duration::from_millis(1200));
    let second = js(
        &tab,
        "document.querySelector('.stream[data-id=\"photos\"] img.preview').src",
    );
    assert_ne!(first, second, "the preview did not refresh");

    // Events: the recent ones on load, then one that arrives live over the stream.
    tab.find_element("#tabs button[data-tab=\"events\"]")
        .unwrap()
        .click()
        .unwrap();
    let known = js(
        &tab,
        "[...document.querySelectorAll('#event-list li')].map(li => li.dataset.id)",
    );
    let known: Vec<String> = serde_json::from_value(known).unwrap();
    let fresh = until(
        &tab,
        "an event to appear live",
        Duration::from_secs(60),
        &format!(
            "(() => {{ const known = new Set({}); const li = [...document.querySelectorAll('#event-list li')].find(li => !known.has(li.dataset.id)); return li && li.dataset.type }})()",
            serde_json::to_string(&known).unwrap()
        ),
    );
    eprintln!("{} events on load, then a live {fresh}", known.len());
    // Newest first.
    let times = js(
        &tab,
        "[...document.querySelectorAll('#event-list li time')].map(t => Date.parse(t.getAttribute('datetime')))",
    );
    let times: Vec<f64> = serde_json::from_value(times).unwrap();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // Unknown faces have snapshot thumbnails.
    until(
        &tab,
        "an unknown face with its snapshot",
        Duration::from_secs(60),
        "[...document.querySelectorAll('#event-list li[data-type=\"face.unknown\"] img.thumb')].some(i => i.naturalWidth > 0)",
    );

    // People: enrol Joe Biden from a photo; the running stream then names him.
    tab.find_element("#tabs button[data-tab=\"people\"]")
        .unwrap()
        .click()
        .unwrap();
    tab.find_element("#enrol-name")
        .unwrap()
        .type_into("Joe Biden")
        .unwrap();
    let biden = built("media/faces/biden.jpg");
    tab.find_element("#enrol-photo")
        .unwrap()
        .set_input_files(&[biden.to_str().unwrap()])
        .unwrap();
    tab.find_element("#enrol button[type=submit]")
        .unwrap()
        .click()
        .unwrap();
    until(
        &tab,
        "the enrolment to be confirmed",
        Duration::from_secs(30),
        "document.querySelector('#enrol .ok').textContent.includes('Enrolled Joe Biden')",
    );
    until(
        &tab,
        "Joe Biden's card with his aligned chip",
        Duration::from_secs(15),
        "[...document.querySelectorAll('#people-list .person')].some(c => c.querySelector('h3').textContent === 'Joe Biden' && c.querySelector('img.chip').naturalWidth === 150)",
    );
    let enrolled_at = js(&tab, "new Date().toISOString()");
    // Who is this? The same photo is identified as him; verified against him it is the same.
    let lookup = |name: &str| {
        js(
            &tab,
            &format!(
                "(document.querySelector('#lookup-name').value = {}, 1)",
                Value::from(name)
            ),
        );
        tab.find_element("#lookup-photo")
            .unwrap()
            .set_input_files(&[biden.to_str().unwrap()])
            .unwrap();
        tab.find_element("#lookup button[type=submit]")
            .unwrap()
            .click()
            .unwrap();
        until(
            &tab,
            "the answer to who is this",
            Duration::from_secs(30),
            "document.querySelector('#lookup .result').textContent || document.querySelector('#lookup .error').textContent",
        )
    };
    let who = lookup("");
    assert!(
        who.as_str().unwrap().starts_with("Face 1: Joe Biden"),
        "{who}"
    );
    let same = lookup("Joe Biden");
    assert!(
        same.as_str()
            .unwrap()
            .starts_with("Same person as Joe Biden"),
        "{same}"
    );
    tab.find_element("#tabs button[data-tab=\"events\"]")
        .unwrap()
        .click()
        .unwrap();
    until(
        &tab,
        "a later event naming Joe Biden",
        Duration::from_secs(60),
        &format!(
            "[...document.querySelectorAll('#event-list li[data-type=\"face.identified\"]')].some(li => li.querySelector('.what').textContent === 'Joe Biden' && li.querySelector('time').getAttribute('datetime') > {enrolled_at})"
        ),
    );

    // A name that is markup is shown as text: enrolled from the unknown-faces page (one step
    // from a face.unknown snapshot), then listed.
    tab.find_element("#tabs button[data-tab=\"unknown\"]")
        .unwrap()
        .click()
        .unwrap();
    let hostile = "<img src=x onerror=alert(1)>";
    until(
        &tab,
        "an unknown face to name",
        Duration::from_secs(30),
        "document.querySelector('#unknown-list form.unknown')",
    );
    // One card per unknown group: naming it names the group. New unknown faces keep arriving,
    // of this person and of others above it: the card is held by its key (its group), its name
    // set and its form submitted through its own button from the page, rather than keys and a
    // click at coordinates that move.
    let key = js(
        &tab,
        "document.querySelector('#unknown-list form.unknown').dataset.key",
    );
    let card = format!("document.querySelector('#unknown-list form[data-key={key}]')");
    js(
        &tab,
        &format!(
            "({card}.elements.name.value = {}, {card}.requestSubmit({card}.querySelector('button')), 1)",
            Value::from(hostile)
        ),
    );
    let end = Instant::now() + Duration::from_secs(60);
    let said = loop {
        let said = js(
            &tab,
            &format!("{card} && ({card}.querySelector('.ok').textContent || {card}.querySelector('.error').textContent)"),
        );
        if said.as_str().is_some_and(|s| !s.is_empty()) {
            break said;
        }
        let state = js(&tab, &format!("{card} && {card}.textContent"));
        assert!(
            Instant::now() < end,
            "no answer to naming the unknown face: {state}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(said.as_str().unwrap().starts_with("Enrolled as"), "{said}");
    tab.find_element("#tabs button[data-tab=\"people\"]")
        .unwrap()
        .click()
        .unwrap();
    until(
        &tab,
        "the hostile name listed as text",
        Duration::from_secs(15),
        &format!(
            "[...document.querySelectorAll('#people-list h3')].some(h => h.textContent === {})",
            Value::from(hostile)
        ),
    );
    // No element came out of the name, and nothing ran.
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('#people-list img:not(.chip)').length"
        ),
        Value::from(0)
    );
    let people = api(&addr, "GET", "/v1/gallery/people", None, "").1;
    assert!(
        people["people"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == hostile),
        "{people}"
    );

    // The page named the face's group; the API also enrols straight from an event's snapshot.
    let (_, recent) = api(&addr, "GET", "/v1/events?limit=1000", None, "");
    let sighting = recent["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["type"] == "face.unknown" && e["snapshot"].is_string())
        .expect("an unknown face with a snapshot")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = api(
        &addr,
        "POST",
        &format!("/v1/gallery/people/From%20Snapshot/photos?event={sighting}"),
        None,
        "",
    );
    assert_eq!(
        (code, v["enrolled"].as_str()),
        (201, Some("From Snapshot")),
        "{v}"
    );
    // An event that is not among the recent ones, and an enrolment with no chip, are 404s.
    let (code, err) = api(
        &addr,
        "POST",
        "/v1/gallery/people/X/photos?event=nope",
        None,
        "",
    );
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    let (code, _) = api(
        &addr,
        "GET",
        "/v1/gallery/people/Joe%20Biden/photos/7",
        None,
        "",
    );
    assert_eq!(code, 404);

    // A stream id with quotes and markup: refused by the API, its message shown as text.
    tab.find_element("#tabs button[data-tab=\"streams\"]")
        .unwrap()
        .click()
        .unwrap();
    let quoted = "cam\"'<b>x</b>";
    tab.find_element("#add-id")
        .unwrap()
        .type_into(quoted)
        .unwrap();
    tab.find_element("#add-url")
        .unwrap()
        .type_into(built("media/bigbuckbunny.mp4").to_str().unwrap())
        .unwrap();
    tab.find_element("#add-stream button[type=submit]")
        .unwrap()
        .click()
        .unwrap();
    let said = until(
        &tab,
        "the API's refusal shown",
        Duration::from_secs(15),
        "document.querySelector('#add-stream .error').textContent",
    );
    assert!(said.as_str().unwrap().contains(quoted), "{said}");
    assert_eq!(
        js(&tab, "document.querySelectorAll('b').length"),
        Value::from(0)
    );

    // Desktop screenshot, with the streams showing.
    js(
        &tab,
        "(window.scrollTo(0, 0), document.activeElement.blur(), 1)",
    );
    std::thread::sleep(Duration::from_millis(800));
    let desktop = tab
        .capture_screenshot(Shot::Jpeg, Some(70), None, true)
        .unwrap();
    save_screenshot(&desktop, "console-desktop.jpg");
    assert!(box_pixels(&desktop).1 > 10.0);

    // Remove a stream from its card: gone from the page and from the API.
    tab.find_element(".stream[data-id=\"bunny\"] button.danger")
        .unwrap()
        .click()
        .unwrap();
    until(
        &tab,
        "the bunny card to go",
        Duration::from_secs(60),
        "!document.querySelector('.stream[data-id=\"bunny\"]')",
    );
    let (code, _) = api(&addr, "GET", "/v1/streams/bunny", None, "");
    assert_eq!(code, 404);

    // At a phone's width (a 360 x 740 mobile screen): one column, nothing wider than it.
    let ptab = b.new_tab().unwrap();
    ptab.call_method(Emulation::SetDeviceMetricsOverride {
        width: 360,
        height: 740,
        device_scale_factor: 1.0,
        mobile: true,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .unwrap();
    ptab.navigate_to(&url)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    until(
        &ptab,
        "the phone view to show the photos stream",
        Duration::from_secs(30),
        "document.querySelector('.stream[data-id=\"photos\"] img.preview') && document.querySelector('.stream[data-id=\"photos\"] img.preview').naturalWidth > 0",
    );
    let overflow = js(
        &ptab,
        "document.documentElement.scrollWidth - document.documentElement.clientWidth",
    );
    assert_eq!(
        overflow,
        Value::from(0),
        "the page scrolls sideways on a phone"
    );
    let width = js(&ptab, "document.documentElement.clientWidth");
    assert_eq!(width, Value::from(360));
    let phone = ptab
        .capture_screenshot(Shot::Jpeg, Some(70), None, true)
        .unwrap();
    assert!(box_pixels(&phone).1 > 10.0);
    save_screenshot(&phone, "console-phone.jpg");
    assert_eq!(js(&tab, "window.alerted || null"), Value::Null);
    drop(child);
}

#[test]
fn with_tokens_only_sign_in_shows_and_a_read_token_cannot_change_anything() {
    let Some(chrome) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (write, wline) = new_token("write");
    let (read, rline) = new_token("read");
    let yaml = format!(
        "streams: []\napi:\n  listen: '127.0.0.1:0'\n  state_dir: {}\n  tokens:\n{wline}\n{rline}\naction: {{enabled: false}}\nfaces: {{enabled: false}}\nsinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\n{}",
        dir.path().join("state").display(),
        runtime_yaml()
    );
    let cfg = write_config(dir.path(), &yaml);
    let (child, _, addr, logs) = start_api(&cfg);

    let b = browser(chrome, (1280, 900));
    let tab = b.new_tab().unwrap();
    tab.navigate_to(&format!("http://{addr}/"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    // Without a token: the sign-in form only.
    until(
        &tab,
        "the sign-in form",
        Duration::from_secs(15),
        "!document.querySelector('#login').hidden",
    );
    let hidden = js(
        &tab,
        "['#tabs', '#streams', '#events', '#people', '#unknown'].map(s => document.querySelector(s).hidden)",
    );
    assert_eq!(hidden, serde_json::json!([true, true, true, true, true]));

    let sign_in = |token: &str| {
        tab.find_element("#token")
            .unwrap()
            .type_into(token)
            .unwrap();
        tab.find_element("#login-form button")
            .unwrap()
            .click()
            .unwrap();
    };
    // A wrong token is refused, and the form stays.
    sign_in("not-a-token");
    until(
        &tab,
        "the refusal",
        Duration::from_secs(15),
        "document.querySelector('#login-error').textContent === 'The token is not valid.'",
    );
    assert_eq!(
        js(&tab, "document.querySelector('#tabs').hidden"),
        Value::Bool(true)
    );

    // A read token: in, with every changing button off and saying why.
    sign_in(&read);
    until(
        &tab,
        "the console for a reader",
        Duration::from_secs(15),
        "!document.querySelector('#tabs').hidden && !document.querySelector('#readonly').hidden",
    );
    let buttons = js(
        &tab,
        "[...document.querySelectorAll('button.write')].map(b => [b.disabled, b.textContent.includes('read-only')])",
    );
    let buttons: Vec<(bool, bool)> = serde_json::from_value(buttons).unwrap();
    assert!(
        buttons.len() >= 2 && buttons.iter().all(|&(d, s)| d && s),
        "{buttons:?}"
    );
    // The token is kept in the session, never in the address.
    assert!(!js(&tab, "location.href").as_str().unwrap().contains(&read));
    assert_eq!(
        js(&tab, "sessionStorage.getItem('vigil.token')"),
        Value::from(read.as_str())
    );
    // And the API itself refuses the reader's changes, whatever the page does.
    let status = js(
        &tab,
        &format!(
            "fetch('/v1/streams', {{method: 'POST', headers: {{Authorization: 'Bearer {read}'}}, body: '{{}}'}}).then(r => r.status)"
        ),
    );
    assert_eq!(status, Value::from(403));

    // Signing out and in with the write token turns the buttons on.
    tab.find_element("#logout").unwrap().click().unwrap();
    sign_in(&write);
    until(
        &tab,
        "the console for a writer",
        Duration::from_secs(15),
        "!document.querySelector('#tabs').hidden && document.querySelector('#readonly').hidden",
    );
    let enabled = js(
        &tab,
        "[...document.querySelectorAll('#add-stream button.write')].every(b => !b.disabled)",
    );
    assert_eq!(enabled, Value::Bool(true));
    // Neither token reached the log.
    let logs = logs.lock().unwrap().join("\n");
    assert!(!logs.contains(&read) && !logs.contains(&write));
    drop(child);
}
