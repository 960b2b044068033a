//! The operator console in a real browser: dev/host + handler + Azurite + dev/sim, driven
//! through headless Chromium (tests/browser).
#![allow(clippy::unwrap_used)]

mod browser;

use browser::Browser;

/// The harness itself: a page rendered, read back and photographed.
#[tokio::test]
async fn the_browser_renders_a_page_and_takes_a_screenshot() {
    let b = Browser::start().await;
    b.goto("data:text/html,<title>t</title><h1 id=h>Hello &lt;b&gt;</h1>")
        .await;
    assert_eq!(b.text("#h").await, "Hello <b>");
    let shot = b.screenshot("harness").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    b.close().await;
}
