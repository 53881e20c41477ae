//! The pages' HTML, compile-checked (maud escapes every value it prints).

use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::assets;
use crate::protocol::accounts::User;
use crate::protocol::membership::{InvitePreview, InviteUnusable};
use crate::protocol::projects::{Project, Role};

/// Every page: its title, landmarks, the stylesheet and the one module.
/// Signed in, the header names the visitor and offers to sign out.
fn layout(title: &str, visitor: Option<&User>, main: Markup) -> Markup {
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
                    @if let Some(user) = visitor {
                        div class="account" {
                            span class="who" { "Signed in as " strong { (user.display_name) } }
                            button id="sign-out" type="button" class="link" { "Sign out" }
                        }
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
/// module sends it as JSON, then reloads the page signed in.
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

/// `/` for a visitor not signed in.
pub fn index() -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to Ferry" }
            p class="lede" { "Browse and download the files a project's owner shares with you." }
            (auth_form("Your Ferry account"))
        },
    )
}

/// `/` signed in: the visitor's projects, each a link named by its name.
pub fn projects(visitor: &User, projects: &[Project]) -> Markup {
    layout(
        "Your projects",
        Some(visitor),
        html! {
            h1 { "Your projects" }
            @if projects.is_empty() {
                p class="lede" {
                    "You are not in any project yet. Open the invite link a project's owner sent you to join theirs."
                }
            } @else {
                ul class="list card" aria-label="Your projects" {
                    @for project in projects {
                        li class="row" {
                            a class="name" href=(project_url(project)) { (project.name) }
                            span class="meta" { (role_words(project.role)) }
                        }
                    }
                }
            }
        },
    )
}

fn role_words(role: Role) -> &'static str {
    match role {
        Role::Owner => "You own it",
        Role::Member => "Member",
    }
}

fn project_url(project: &Project) -> String {
    format!("/p/{}/", project.id)
}

/// A project's page for a visitor not signed in: sign in, then the same
/// address shows the project (the module reloads it).
pub fn sign_in_first() -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to see this project" }
            p class="lede" { "This page belongs to a Ferry project. Sign in with the account you joined it with." }
            (auth_form("Your Ferry account"))
        },
    )
}

/// `/join/<token>` for a known token. The token itself is never written
/// into the page: the module reads it from the address when joining.
pub fn join(invite: &InvitePreview, visitor: Option<&User>) -> Markup {
    let InvitePreview { project_name: project, owner_display_name: owner, .. } = invite;
    let Some(reason) = invite.reason else {
        return layout(
            &format!("Join {project}"),
            visitor,
            html! {
                h1 { "Join “" (project) "”" }
                p class="lede" { (owner) " invited you to the project " strong { (project) } "." }
                // In the order a person goes: an account first, then joining.
                @if visitor.is_none() {
                    (auth_form("1. Sign in or sign up"))
                }
                section class="card" aria-labelledby="join-heading" {
                    h2 id="join-heading" {
                        @if visitor.is_none() { "2. Join the project" } @else { "Join the project" }
                    }
                    @if let Some(user) = visitor {
                        p { "You will join as " strong { (user.display_name) } " (" (user.email) ")." }
                    } @else {
                        p { "Once you are signed in, join to see its files." }
                    }
                    button id="join" type="button" data-project=(invite.project_id) { "Join" }
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
        visitor,
        html! {
            h1 { "This invite link can no longer be used" }
            p class="lede" { "It was for the project " strong { (project) } ", shared by " (owner) "." }
            p class="notice" { (why) }
            p { "Ask " (owner) " for a new link." }
        },
    )
}

/// `/join/<token>` for a token no invite has: nothing about any project.
pub fn invalid_invite(visitor: Option<&User>) -> Markup {
    layout(
        "Invite link not valid",
        visitor,
        html! {
            h1 { "This invite link is not valid" }
            p class="lede" { "Check that you opened the whole link, or ask the person who sent it for a new one." }
            p { a href="/" { "Go to Ferry's start page" } }
        },
    )
}

/// The trail from the projects list down to `folder`, the last one the
/// current page.
fn breadcrumbs(project: &Project, folder: &str, settings: bool) -> Markup {
    let segments: Vec<&str> = folder.split('/').filter(|s| !s.is_empty()).collect();
    let at_top = segments.is_empty() && !settings;
    html! {
        nav class="crumbs" aria-label="Breadcrumb" {
            ol {
                li { a href="/" { "Projects" } }
                li {
                    a href=(project_url(project)) aria-current=[at_top.then_some("page")] { (project.name) }
                }
                @for (i, name) in segments.iter().enumerate() {
                    li {
                        a href=(folder_url(project, &segments[..=i]))
                            aria-current=[(i + 1 == segments.len()).then_some("page")] { (name) }
                    }
                }
                @if settings {
                    li { a href=(format!("/p/{}/settings", project.id)) aria-current="page" { "Settings" } }
                }
            }
        }
    }
}

/// `/p/<id>/<segment>/.../`, each segment percent-encoded.
fn folder_url(project: &Project, segments: &[&str]) -> String {
    let mut url = project_url(project);
    for segment in segments {
        url.extend(utf8_percent_encode(segment, SEGMENT));
        url.push('/');
    }
    url
}

/// What a path segment must escape in a URL (as `encodeURIComponent` does).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A folder of a project (`/` for its top). The module fills the list
/// from the API, pages it and keeps it live; the server checks access and
/// gives the module what it starts from.
pub fn folder(visitor: &User, project: &Project, folder: &str) -> Markup {
    let name = folder.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty());
    let title = name.map_or_else(|| project.name.clone(), |n| format!("{n} · {}", project.name));
    layout(
        &title,
        Some(visitor),
        html! {
            div id="app" data-page="folder" data-project=(project.id) data-folder=(folder)
                data-role=(project.role.as_str()) data-user=(visitor.id) {
                (breadcrumbs(project, folder, false))
                h1 { (name.unwrap_or(&project.name)) }
                p class="lede" {
                    @if project.role == Role::Owner {
                        "You own this project. "
                        a href=(format!("/p/{}/settings", project.id)) { "Project settings" }
                    } @else {
                        "Files the project's owner shares from their computer. Choose Download to get one."
                    }
                }
                p id="live" class="status live" role="status" aria-live="polite" {}
                section class="card" aria-labelledby="files-heading" {
                    h2 id="files-heading" { "Files" }
                    ul id="entries" class="list" aria-labelledby="files-heading" {}
                    p id="files-status" class="status" role="status" aria-live="polite" { "Loading files…" }
                    button id="more" type="button" class="secondary" hidden { "Show more files" }
                }
                section class="card" aria-labelledby="downloads-heading" {
                    h2 id="downloads-heading" { "Your downloads" }
                    ul id="transfers" class="list" aria-labelledby="downloads-heading" {}
                    p id="transfers-status" class="status" role="status" aria-live="polite" {}
                }
            }
        },
    )
}

/// `/p/<id>/settings`, the owner's: invites, members, devices and every
/// transfer, filled and kept live by the module.
pub fn settings(visitor: &User, project: &Project) -> Markup {
    layout(
        &format!("Settings · {}", project.name),
        Some(visitor),
        html! {
            div id="app" data-page="settings" data-project=(project.id) data-folder="/"
                data-role=(project.role.as_str()) data-user=(visitor.id) {
                (breadcrumbs(project, "/", true))
                h1 { "Settings of “" (project.name) "”" }
                p id="live" class="status live" role="status" aria-live="polite" {}
                section class="card" aria-labelledby="invites-heading" {
                    h2 id="invites-heading" { "Invite links" }
                    p { "Each link lets one person join (for a week). Send it to them any way you like." }
                    button id="create-invite" type="button" { "Create invite link" }
                    div id="new-invite" class="new-invite" hidden {
                        label for="invite-url" { "New invite link" }
                        div class="copy" {
                            input id="invite-url" type="text" readonly aria-describedby="invite-hint";
                            button id="copy-invite" type="button" { "Copy" }
                        }
                        p id="invite-hint" class="hint" { "Copy it now: it is shown only this once." }
                    }
                    p id="invites-status" class="status" role="status" aria-live="polite" {}
                    ul id="invites" class="list" aria-labelledby="invites-heading" {}
                }
                section class="card" aria-labelledby="members-heading" {
                    h2 id="members-heading" { "Members" }
                    p id="members-status" class="status" role="status" aria-live="polite" {}
                    ul id="members" class="list" aria-labelledby="members-heading" {}
                }
                section class="card" aria-labelledby="devices-heading" {
                    h2 id="devices-heading" { "Devices" }
                    p id="devices-status" class="status" role="status" aria-live="polite" {}
                    ul id="devices" class="list" aria-labelledby="devices-heading" {}
                }
                section class="card" aria-labelledby="transfers-heading" {
                    h2 id="transfers-heading" { "Transfers" }
                    ul id="transfers" class="list" aria-labelledby="transfers-heading" {}
                    p id="transfers-status" class="status" role="status" aria-live="polite" {}
                }
            }
        },
    )
}

/// Any unknown address outside `/api/`, and a project the visitor cannot see.
pub fn not_found(visitor: Option<&User>) -> Markup {
    layout(
        "Page not found",
        visitor,
        html! {
            h1 { "Page not found" }
            p class="lede" { "There is no page at this address, or it belongs to a project you are not in." }
            p { a href="/" { "Go to Ferry's start page" } }
        },
    )
}

/// An owner's page opened by a member.
pub fn owner_only(visitor: &User, project: &Project) -> Markup {
    layout(
        "Only for the owner",
        Some(visitor),
        html! {
            h1 { "Only the project's owner can see this page" }
            p class="lede" { "You are a member of " strong { (project.name) } "." }
            p { a href=(project_url(project)) { "Back to the project's files" } }
        },
    )
}

/// A page that could not be made: the database down, or our own fault.
pub fn failed(retry: bool) -> Markup {
    layout(
        "Something went wrong",
        None,
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
