//! The console's sign-in, session and refusals over HTTP, through dev/host + handler + dev/sim
//! (Entra's sign-in page, token endpoint and JWKS) + Azurite: a client with a cookie store
//! follows the redirects to the simulated sign-in page and picks a test user, as a browser
//! would.

mod common;

use common::{Env, Options};
use defender_ops::console::session::{COOKIE_NAME, Sealed, SessionKey};
use defender_ops::domain::RoleSet;
use dev_sim::{AppRegistration, SimConfig, TEST_USERS};
use reqwest::redirect::Policy;
use time::OffsetDateTime;

const HOME_APP: &str = "44444444-4444-4444-8444-444444444444";
const HOME_SECRET: &str = "homeConsole5ecretQ93";
const SESSION_SECRET: &str = "console-session-key-for-tests-0123456789abcdef";

/// The handler with the console configured, the home app and its redirect URI in the sim.
async fn start() -> Env {
    let home = SimConfig::default().home_tenant;
    let env = Env::start_with(Options {
        settings: vec![
            ("HOME_TENANT_ID".into(), home.clone()),
            ("HOME_CLIENT_ID".into(), HOME_APP.into()),
            ("HOME_SECRET_NAME".into(), "home-app".into()),
            ("CONSOLE_SESSION_SECRET".into(), "console-session".into()),
        ],
        ..Options::default()
    })
    .await;
    env.sim
        .add_app(AppRegistration::with_secret(&home, HOME_APP, HOME_SECRET));
    env.sim.set_secret("home-app", HOME_SECRET);
    env.sim.set_secret("console-session", SESSION_SECRET);
    env.sim
        .add_redirect_uri(&home, HOME_APP, &env.url("console/auth/callback"));
    env
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn unescape(s: &str) -> String {
    s.replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#34;", "\"")
        .replace("&#38;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The `name`/`value` pairs of the hidden inputs of a page.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|rest| {
            let name = rest.split("name=\"").nth(1)?.split('"').next()?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

/// Signs `user` in with a fresh browser-like client; the client and the page it lands on.
async fn sign_in(env: &Env, user: &str, path: &str) -> (reqwest::Client, u16, String) {
    let client = browser();
    let page = client
        .get(env.url(path))
        .send()
        .await
        .expect("console answers");
    let authorize = page.url().clone();
    assert!(
        authorize.path().ends_with("/oauth2/v2.0/authorize"),
        "redirected to the sign-in page, not {authorize}"
    );
    let html = page.text().await.expect("sign-in page");
    let mut form = hidden_inputs(&html);
    form.push(("user".into(), user.into()));
    let landed = client
        .post(authorize.as_str())
        .form(&form)
        .send()
        .await
        .expect("signed in");
    let status = landed.status().as_u16();
    assert!(
        landed.url().as_str().starts_with(&env.url("console")),
        "back on the console: {}",
        landed.url()
    );
    let headers = landed.headers().clone();
    assert_security_headers(&headers, landed.url().as_str());
    (client, status, landed.text().await.expect("page"))
}

fn assert_security_headers(h: &reqwest::header::HeaderMap, what: &str) {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(
        get("content-security-policy"),
        "default-src 'self'",
        "{what}"
    );
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("referrer-policy"), "same-origin", "{what}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert!(!get("cache-control").is_empty(), "{what}");
}

fn key(secret: &str) -> SessionKey {
    SessionKey::derive(secret.as_bytes()).expect("long enough")
}

fn session_of(user: &str, now: OffsetDateTime) -> Sealed {
    let u = dev_sim::test_user(user).expect("test user");
    Sealed::user(
        u.upn.into(),
        u.oid.into(),
        u.name.into(),
        RoleSet::from_claims(u.roles.iter().copied()),
        now,
    )
}

/// GET `path` with a hand-made cookie, without following redirects.
async fn get_with_cookie(env: &Env, path: &str, cookie: &str) -> reqwest::Response {
    no_redirects()
        .get(env.url(path))
        .header("cookie", format!("{COOKIE_NAME}={cookie}"))
        .send()
        .await
        .expect("sent")
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn every_test_user_signs_in_over_http_and_sees_their_rights() {
    let env = start().await;
    for user in TEST_USERS {
        let (client, status, html) = sign_in(&env, user.key, "console/").await;
        if user.roles.is_empty() {
            assert_eq!(status, 403, "{}: {html}", user.key);
            assert!(html.contains("No access to the console"), "{html}");
        } else {
            assert_eq!(status, 200, "{}: {html}", user.key);
            assert!(html.contains(user.upn), "{}", user.key);
            assert!(html.contains("Sign out"));
            // The admin's display name has markup in it: shown as text.
            assert!(!html.contains("<script>"), "{html}");
            let is_admin = user.roles.contains(&"Console.Admin");
            assert_eq!(
                html.contains("/api/console/tenants"),
                is_admin,
                "{}",
                user.key
            );
        }
        // The session holds: a second page needs no new sign-in.
        let again = client.get(env.url("console/")).send().await.expect("sent");
        assert!(again.url().as_str().starts_with(&env.url("console")));
        // Sign-out: POST with the page's CSRF token clears the session.
        let csrf = hidden_inputs(&html)
            .into_iter()
            .find(|(n, _)| n == "csrf")
            .map(|(_, v)| v)
            .expect("the header's sign-out form carries the CSRF token");
        let out = client
            .post(env.url("console/auth/signout"))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .expect("sent");
        assert_eq!(out.status(), 200);
        let after = no_redirects_with_jar(&client, &env).await;
        assert_eq!(after, 303, "signed out: the next page asks to sign in");
    }
    let admin = sign_in(&env, "admin", "console/").await.2;
    // askama escapes with numeric entities.
    assert!(admin.contains("Adam Admin &#60;script&#62;"), "{admin}");
}

/// The status of the overview with `client`'s cookies (its jar), redirects followed to the
/// sign-in page only if needed.
async fn no_redirects_with_jar(client: &reqwest::Client, env: &Env) -> u16 {
    let r = client.get(env.url("console/")).send().await.expect("sent");
    if r.url().path().ends_with("/oauth2/v2.0/authorize") {
        303
    } else {
        r.status().as_u16()
    }
}

#[tokio::test]
async fn sign_in_returns_to_the_page_asked_for() {
    let env = start().await;
    let no_cookie = no_redirects()
        .get(env.url("console/tenants"))
        .send()
        .await
        .expect("sent");
    assert_eq!(no_cookie.status(), 303);
    assert_eq!(
        location(&no_cookie),
        "/api/console/auth/signin?returnTo=%2Fapi%2Fconsole%2Ftenants"
    );
    assert_security_headers(no_cookie.headers(), "redirect");
    let (_, status, html) = sign_in(&env, "admin", "console/tenants").await;
    assert!(status == 200 || status == 404, "{status}");
    assert!(html.contains("adam.admin@ops.test"));
    // Another site as returnTo is not followed.
    let r = no_redirects()
        .get(env.url("console/auth/signin?returnTo=https%3A%2F%2Fevil.example%2F"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 303);
    let set_cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for part in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    assert!(location(&r).starts_with(env.sim.base_url().as_str()));
}

#[tokio::test]
async fn expired_forged_and_other_key_sessions_are_refused() {
    let env = start().await;
    let now = OffsetDateTime::now_utc();
    // The right key and an unexpired session open (so the refusals below are about them).
    let good = key(SESSION_SECRET).seal(&session_of("viewer", now));
    let r = get_with_cookie(&env, "console/", &good).await;
    assert_eq!(r.status(), 200);
    assert_security_headers(r.headers(), "page");
    assert_eq!(r.headers()["cache-control"], "no-store");

    let expired = key(SESSION_SECRET).seal(&session_of("viewer", now - time::Duration::hours(9)));
    let other_key =
        key("another-secret-of-at-least-32-bytes-000000").seal(&session_of("admin", now));
    let mut forged = good.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'x' { b'y' } else { b'x' };
    let forged = String::from_utf8(forged).expect("ascii");
    for (what, cookie) in [
        ("expired", expired.as_str()),
        ("other key", other_key.as_str()),
        ("forged", forged.as_str()),
        ("garbage", "v1.bm90IGEgc2Vzc2lvbg"),
    ] {
        let r = get_with_cookie(&env, "console/", cookie).await;
        assert_eq!(r.status(), 303, "{what}");
        assert!(
            location(&r).starts_with("/api/console/auth/signin"),
            "{what}"
        );
    }
    // A sign-in still under way is no session either.
    let pending = key(SESSION_SECRET).seal(&Sealed::Pending {
        state: "s".into(),
        nonce: "n".into(),
        verifier: "v".into(),
        return_to: "/api/console/".into(),
        exp: now.unix_timestamp() + 600,
    });
    assert_eq!(
        get_with_cookie(&env, "console/", &pending).await.status(),
        303
    );
}

#[tokio::test]
async fn posts_need_their_csrf_token_and_the_role() {
    let env = start().await;
    let now = OffsetDateTime::now_utc();
    let admin = session_of("admin", now);
    let Sealed::User { csrf, .. } = &admin else {
        unreachable!()
    };
    let csrf = csrf.clone();
    let admin_cookie = key(SESSION_SECRET).seal(&admin);
    let post = |cookie: String, body: String| {
        let env = &env;
        async move {
            no_redirects()
                .post(env.url("console/auth/signout"))
                .header("cookie", format!("{COOKIE_NAME}={cookie}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .expect("sent")
        }
    };
    let r = post(admin_cookie.clone(), String::new()).await;
    assert_eq!(r.status(), 403, "no CSRF field");
    assert_security_headers(r.headers(), "403");
    assert!(r.text().await.expect("page").contains("Form expired"));
    assert_eq!(
        post(admin_cookie.clone(), "csrf=wrong".into())
            .await
            .status(),
        403
    );
    // Another session's token is not this session's.
    let other = session_of("admin", now);
    let Sealed::User {
        csrf: other_csrf, ..
    } = &other
    else {
        unreachable!()
    };
    assert_eq!(
        post(admin_cookie.clone(), format!("csrf={other_csrf}"))
            .await
            .status(),
        403
    );
    let ok = post(admin_cookie, format!("csrf={csrf}")).await;
    assert_eq!(ok.status(), 200, "the right token is accepted");
    assert!(
        ok.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );

    // A POST without any session goes to sign-in, never through.
    let r = no_redirects()
        .post(env.url("console/tenants"))
        .form(&[("csrf", "x")])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn static_assets_are_served_as_text_with_the_headers() {
    let env = start().await;
    for (path, kind) in [
        ("console/static/app.css", "text/css"),
        ("console/static/icon.svg", "image/svg+xml"),
    ] {
        let r = no_redirects()
            .get(env.url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(kind),
            "{path}"
        );
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .expect("ascii")
                .contains("max-age")
        );
        assert_security_headers(r.headers(), path);
    }
    let missing = no_redirects()
        .get(env.url("console/static/nope.js"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}
