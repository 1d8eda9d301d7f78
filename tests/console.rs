//! The console's session model over a real socket: sign-in with the admin token, the cookie's
//! attributes, CSRF on every change, sign-out, the page headers, and the group history the
//! charts draw. The pages themselves are driven in a real browser by tests/console_browser.rs.

mod common;

use common::*;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

fn base(server: &Server) -> String {
    format!("http://{}", server.app.http_addr())
}

/// Signs in; the session cookie (`name=value`) and the page shell's CSRF token.
async fn sign_in(server: &Server) -> (String, String) {
    let resp = client()
        .post(format!("{}/console/login", base(server)))
        .form(&[("token", "test-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[LOCATION], "/console/");
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{attribute} missing from {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP without a TLS front: no Secure attribute ({set})");
    let cookie = set.split(';').next().unwrap().to_string();
    let shell = client()
        .get(format!("{}/console/", base(server)))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf =
        shell.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert_eq!(csrf.len(), 64);
    (cookie, csrf)
}

#[tokio::test]
async fn the_console_needs_the_admin_token_and_never_echoes_it() {
    let server = Server::start().await;
    let root = client().get(format!("{}/", base(&server))).send().await.unwrap();
    assert_eq!((root.status().as_u16(), root.headers()[LOCATION].to_str().unwrap()), (303, "/console/"));
    let shell = client().get(format!("{}/console/", base(&server))).send().await.unwrap();
    assert_eq!(
        (shell.status().as_u16(), shell.headers()[LOCATION].to_str().unwrap()),
        (303, "/console/login")
    );

    let login = client().get(format!("{}/console/login", base(&server))).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let csp = login.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(login.headers()["x-frame-options"], "DENY");
    assert!(login.text().await.unwrap().contains("name=\"token\""));

    let wrong = client()
        .post(format!("{}/console/login", base(&server)))
        .form(&[("token", "test-tokeN")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let page = wrong.text().await.unwrap();
    assert!(page.contains("That is not the admin token") && !page.contains("test-tokeN"), "{page}");

    let behind_tls = client()
        .post(format!("{}/console/login", base(&server)))
        .header("x-forwarded-proto", "https")
        .form(&[("token", "test-token")])
        .send()
        .await
        .unwrap();
    assert!(behind_tls.headers()[SET_COOKIE].to_str().unwrap().ends_with("; Secure"));
}

#[tokio::test]
async fn changes_made_with_the_session_cookie_need_the_csrf_token() {
    let server = Server::start().await;
    let (cookie, csrf) = sign_in(&server).await;
    let url = format!("{}/api/v1/consumer-groups", base(&server));

    let list = client().get(&url).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(list.status(), 200, "reading needs the cookie only");
    let body = serde_json::json!({"name": "console_group"});
    let forged = client().post(&url).header(COOKIE, &cookie).json(&body).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.json::<Value>().await.unwrap()["code"], "CsrfTokenMismatch");
    let wrong =
        client().post(&url).header(COOKIE, &cookie).header("x-csrf-token", "0".repeat(64)).json(&body);
    assert_eq!(wrong.send().await.unwrap().status(), 403);
    let made = client().post(&url).header(COOKIE, &cookie).header("x-csrf-token", &csrf).json(&body);
    assert_eq!(made.send().await.unwrap().status(), 201);
    let (_, groups) = api::get(&server, "/consumer-groups?name=console_group").await;
    assert_eq!(groups.as_array().unwrap().len(), 1);

    // Sign-out needs the token too, then the cookie is worth nothing.
    let logout = format!("{}/console/logout", base(&server));
    let refused =
        client().post(&logout).header(COOKIE, &cookie).form(&[("csrf", "nope")]).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let out =
        client().post(&logout).header(COOKIE, &cookie).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(client().get(&url).header(COOKIE, &cookie).send().await.unwrap().status(), 401);
    let shell =
        client().get(format!("{}/console/", base(&server))).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(shell.status(), 303);
}

#[tokio::test]
async fn assets_are_served_from_the_binary_and_unknown_ones_are_not() {
    let server = Server::start().await;
    let js = client().get(format!("{}/console/assets/app.js", base(&server))).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let text = js.text().await.unwrap();
    assert!(!text.contains("innerHTML"), "the console never parses server text as HTML");
    // The one address in the script is SVG's namespace name, which is never fetched.
    let text = text.replace("'http://www.w3.org/2000/svg'", "");
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "the console loads nothing from elsewhere"
    );
    let missing = client().get(format!("{}/console/assets/..%2fmod.rs", base(&server))).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_group_history_ends_with_the_status_now() {
    let server = Server::start().await;
    publish_n(server.addr(), "dev1", 3).await;
    // Online + 3 data + offline, none consumed; the last sample is taken at the request.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = api::get(&server, "/consumer-groups/DEFAULT_GROUP/history").await;
        assert_eq!(status, 200);
        assert_eq!(body["intervalSeconds"], 10);
        let samples = body["samples"].as_array().unwrap();
        let last = samples.last().unwrap();
        if last["accumulatedCount"] == 5 {
            assert!(last["time"].as_u64().unwrap() > 0);
            assert_eq!(last["consumptionRate"], 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "history never showed the backlog: {body}");
        tokio::task::yield_now().await;
    }
    assert_eq!(api::get(&server, "/consumer-groups/nope/history").await.0, 404);
}

#[tokio::test]
async fn the_device_list_shows_online_state_address_and_last_online_time() {
    let server = Server::start().await;
    let (_, before) = api::get(&server, "/products/a1test/devices/dev2").await;
    assert_eq!((before["online"].as_bool(), before["lastOnlineTime"].as_u64()), (Some(false), None));
    let (client, mut events) = connect_v4(v4_options(server.addr(), &creds("dev2"))).await.unwrap();
    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let deadline = tokio::time::Instant::now() + WAIT;
    let seen = loop {
        let (_, d) = api::get(&server, "/products/a1test/devices/dev2").await;
        if d["online"] == true {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "dev2 never showed online: {d}");
        tokio::task::yield_now().await;
    };
    assert!(seen["ipAddress"].as_str().unwrap().starts_with("127.0.0.1:"), "{seen}");
    assert!(seen["lastOnlineTime"].as_u64().unwrap() > 0);
    drop(client);
    driver.abort();
}
