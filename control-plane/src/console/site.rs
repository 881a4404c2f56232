//! The public site: the landing page (hero, six feature cards, footer) with the WhatsApp contact
//! button, and the privacy, terms and data-deletion pages. No login, no script, one stylesheet.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::ConsoleConfig;
use super::assets::url;
use super::i18n::Lang;

/// The page frame shared by the public pages.
fn frame(lang: Lang, path: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (super::head(title, Some(lang.t("site.hero.lead")), false))
            body {
                a.skip href="#main" { (lang.t("site.skip")) }
                header.top {
                    div.wrap {
                        a.brand href={ "/?lang=" (lang.code()) } {
                            img src=(url("axon.svg")) alt="" width="28" height="28";
                            "Axon"
                        }
                        nav.langs aria-label=(lang.t("site.lang")) {
                            @for other in Lang::ALL {
                                a href={ (path) "?lang=" (other.code()) } hreflang=(other.code())
                                    lang=(other.code())
                                    aria-current=[(other == lang).then_some("true")] {
                                    (match other { Lang::Es => "Español", Lang::En => "English" })
                                }
                            }
                        }
                    }
                }
                (body)
                footer.bottom {
                    div.wrap {
                        p { "© 2026 " (lang.t("site.footer.rights")) }
                        nav aria-label="Legal" {
                            a href={ "/?lang=" (lang.code()) } { (lang.t("site.footer.home")) }
                            a href={ "/privacy?lang=" (lang.code()) } { (lang.t("site.footer.privacy")) }
                            a href={ "/terms?lang=" (lang.code()) } { (lang.t("site.footer.terms")) }
                            a href={ "/data-deletion?lang=" (lang.code()) } { (lang.t("site.footer.deletion")) }
                        }
                    }
                }
            }
        }
    }
}

/// `https://wa.me/<digits>?text=<message>`, when a number is set.
pub fn whatsapp_link(config: &ConsoleConfig) -> Option<String> {
    let phone = config.whatsapp_phone.as_deref()?;
    let mut link = format!("https://wa.me/{phone}");
    if let Some(message) = config.whatsapp_message.as_deref() {
        link.push_str("?text=");
        link.push_str(&super::encode(message));
    }
    Some(link)
}

/// Line icons (24 × 24, drawn with the text colour), one per feature; inline SVG is markup,
/// so the strict policy allows it.
const ICONS: [&str; 6] = [
    // A speech bubble.
    r#"<path d="M4 5h16v11H9l-5 4z"/>"#,
    // A megaphone.
    r#"<path d="M3 10v4h3l7 4V6L6 10zM16 9a4 4 0 0 1 0 6M19 7a7 7 0 0 1 0 10"/>"#,
    // A paper plane.
    r#"<path d="M21 3 3 11l7 3 3 7zM10 14l11-11"/>"#,
    // A globe.
    r#"<circle cx="12" cy="12" r="9"/><path d="M3 12h18M12 3a14 14 0 0 1 0 18M12 3a14 14 0 0 0 0 18"/>"#,
    // A server.
    r#"<rect x="4" y="4" width="16" height="7" rx="1"/><rect x="4" y="13" width="16" height="7" rx="1"/><path d="M8 7.5h.01M8 16.5h.01"/>"#,
    // A clipboard with lines.
    r#"<rect x="5" y="4" width="14" height="17" rx="2"/><path d="M9 4V3h6v1M8 10h8M8 14h8M8 18h5"/>"#,
];

const FEATURES: [(&str, &str); 6] = [
    ("site.f1.title", "site.f1.text"),
    ("site.f2.title", "site.f2.text"),
    ("site.f3.title", "site.f3.text"),
    ("site.f4.title", "site.f4.text"),
    ("site.f5.title", "site.f5.text"),
    ("site.f6.title", "site.f6.text"),
];

pub fn landing(lang: Lang, config: &ConsoleConfig) -> Markup {
    let whatsapp = whatsapp_link(config);
    frame(
        lang,
        "/",
        lang.t("site.title"),
        html! {
            main #main {
                section.hero {
                    div.wrap {
                        h1 { (lang.t("site.hero.title")) }
                        p.lead { (lang.t("site.hero.lead")) }
                        div.actions {
                            @if let Some(link) = &whatsapp {
                                a.button.whatsapp #whatsapp href=(link) rel="noopener" {
                                    (lang.t("site.hero.whatsapp"))
                                }
                            }
                            a.button.quiet href={ "/app?lang=" (lang.code()) } { (lang.t("site.hero.signin")) }
                        }
                    }
                }
                section.features aria-labelledby="features-title" {
                    div.wrap {
                        h2 #features-title { (lang.t("site.features.title")) }
                        ul.cards {
                            @for ((title, text), icon) in FEATURES.iter().zip(ICONS) {
                                li.card {
                                    svg.icon viewBox="0 0 24 24" width="28" height="28"
                                        fill="none" stroke="currentColor" stroke-width="1.8"
                                        stroke-linecap="round" stroke-linejoin="round"
                                        aria-hidden="true" focusable="false" {
                                        (PreEscaped(icon))
                                    }
                                    h3 { (lang.t(title)) }
                                    p { (lang.t(text)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A legal page: its title and (heading, paragraph) sections after a first paragraph.
fn legal(lang: Lang, path: &str, prefix: &str, config: &ConsoleConfig) -> Markup {
    let key = |k: &str| lang.t(&format!("{prefix}.{k}"));
    let whatsapp = (prefix == "deletion")
        .then(|| whatsapp_link(config))
        .flatten();
    frame(
        lang,
        path,
        key("title"),
        html! {
            main.page #main {
                div.wrap {
                    h1 { (key("title")) }
                    p.updated { (lang.t("legal.updated")) }
                    p { (key("p1")) }
                    h2 { (key("h2")) }
                    p { (key("p2")) }
                    @if prefix != "deletion" {
                        h2 { (key("h3")) }
                        p { (key("p3")) }
                    }
                    @if let Some(link) = whatsapp {
                        p {
                            a.button.whatsapp href=(link) rel="noopener" { (lang.t("deletion.whatsapp")) }
                        }
                    }
                }
            }
        },
    )
}

pub fn privacy(lang: Lang, config: &ConsoleConfig) -> Markup {
    legal(lang, "/privacy", "privacy", config)
}

pub fn terms(lang: Lang, config: &ConsoleConfig) -> Markup {
    legal(lang, "/terms", "terms", config)
}

pub fn data_deletion(lang: Lang, config: &ConsoleConfig) -> Markup {
    legal(lang, "/data-deletion", "deletion", config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whatsapp_link_carries_the_number_and_the_encoded_message() {
        let config = ConsoleConfig {
            whatsapp_phone: Some("34600111222".into()),
            whatsapp_message: Some("Hola, quiero un agente & más".into()),
        };
        assert_eq!(
            whatsapp_link(&config).as_deref(),
            Some("https://wa.me/34600111222?text=Hola%2C%20quiero%20un%20agente%20%26%20m%C3%A1s")
        );
        assert_eq!(whatsapp_link(&ConsoleConfig::default()), None);
    }

    #[test]
    fn pages_escape_what_they_print_and_hold_no_inline_script_or_style() {
        let config = ConsoleConfig {
            whatsapp_phone: Some("1".into()),
            whatsapp_message: Some("\"><script>alert(1)</script>".into()),
        };
        for lang in Lang::ALL {
            for page in [
                landing(lang, &config),
                privacy(lang, &config),
                terms(lang, &config),
                data_deletion(lang, &config),
            ] {
                let html = page.into_string();
                assert!(!html.contains("<script"), "{html}");
                assert!(!html.contains("style="), "inline style");
                assert!(html.contains(&format!("lang=\"{}\"", lang.code())));
            }
        }
    }
}
