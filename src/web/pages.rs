//! The pages' HTML, compile-checked (maud escapes every value it prints).

use maud::{html, Markup, DOCTYPE};

use super::assets;
use crate::protocol::membership::{InvitePreview, InviteUnusable};

/// Every page: its title, landmarks, the stylesheet and the one module.
fn layout(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Ferry" }
                link rel="icon" type="image/svg+xml" href=(assets::ICON.url());
                link rel="stylesheet" href=(assets::CSS.url());
                script type="module" src=(assets::JS.url()) {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="site" {
                    a class="brand" href="/" {
                        img src=(assets::ICON.url()) alt="" width="28" height="28";
                        "Ferry"
                    }
                }
                main id="main" tabindex="-1" { (main) }
                footer class="site" {
                    p { "Ferry shares the files on a project owner's computer with the project's members." }
                }
            }
        }
    }
}

/// Sign in or sign up: one form, the button pressed says which. It posts
/// (never a GET that would put the password in the address) and the
/// module sends it as JSON.
fn auth_form(heading: &str) -> Markup {
    html! {
        form id="auth" class="card" method="post" aria-labelledby="auth-heading" {
            h2 id="auth-heading" { (heading) }
            div class="field" {
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required;
            }
            div class="field" {
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password"
                    minlength="8" required aria-describedby="password-hint";
                p id="password-hint" class="hint" { "At least 8 characters." }
            }
            div class="actions" {
                button type="submit" name="action" value="login" { "Sign in" }
                button type="submit" name="action" value="signup" class="secondary" { "Sign up" }
            }
            p id="auth-status" class="status" role="status" aria-live="polite" {}
        }
    }
}

/// `/`: the app shell. Signed in, part 2 lists the caller's projects here.
pub fn index() -> Markup {
    layout(
        "Sign in",
        html! {
            h1 { "Sign in to Ferry" }
            p class="lede" { "Browse and download the files a project's owner shares with you." }
            (auth_form("Your Ferry account"))
        },
    )
}

/// `/join/<token>` for a known token. The token itself is never written
/// into the page: the module reads it from the address when joining.
pub fn join(invite: &InvitePreview) -> Markup {
    let InvitePreview { project_name: project, owner_display_name: owner, .. } = invite;
    let Some(reason) = invite.reason else {
        return layout(
            &format!("Join {project}"),
            html! {
                h1 { "Join “" (project) "”" }
                p class="lede" { (owner) " invited you to the project " strong { (project) } "." }
                // In the order a person goes: an account first, then joining.
                (auth_form("1. Sign in or sign up"))
                section class="card" aria-labelledby="join-heading" {
                    h2 id="join-heading" { "2. Join the project" }
                    p { "Once you are signed in, join to see its files." }
                    button id="join" type="button" { "Join" }
                    p id="join-status" class="status" role="status" aria-live="polite" {}
                }
            },
        );
    };
    let why = match reason {
        InviteUnusable::UsedUp => "It has been used up: as many people have joined with it as it allows.",
        InviteUnusable::Revoked => "It was revoked, so no one can join with it any more.",
        InviteUnusable::Expired => "It has expired.",
    };
    layout(
        "Invite link no longer works",
        html! {
            h1 { "This invite link can no longer be used" }
            p class="lede" { "It was for the project " strong { (project) } ", shared by " (owner) "." }
            p class="notice" { (why) }
            p { "Ask " (owner) " for a new link." }
        },
    )
}

/// `/join/<token>` for a token no invite has: nothing about any project.
pub fn invalid_invite() -> Markup {
    layout(
        "Invite link not valid",
        html! {
            h1 { "This invite link is not valid" }
            p class="lede" { "Check that you opened the whole link, or ask the person who sent it for a new one." }
            p { a href="/" { "Go to Ferry's start page" } }
        },
    )
}

/// Any unknown address outside `/api/`.
pub fn not_found() -> Markup {
    layout(
        "Page not found",
        html! {
            h1 { "Page not found" }
            p class="lede" { "There is no page at this address." }
            p { a href="/" { "Go to Ferry's start page" } }
        },
    )
}

/// A page that could not be made: the database down, or our own fault.
pub fn failed(retry: bool) -> Markup {
    layout(
        "Something went wrong",
        html! {
            h1 { "Something went wrong" }
            @if retry {
                p class="lede" { "Ferry cannot reach its database right now. Try again in a moment." }
            } @else {
                p class="lede" { "Ferry could not show this page. Try again later." }
            }
        },
    )
}
