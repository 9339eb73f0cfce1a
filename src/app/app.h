/* The paycore process: what every handler and job of the server shares (the
 * loop, configuration, PostgreSQL pool, Redis, routers) and the registration
 * functions of each subsystem's routes. Owned by main.c; lives as long as the
 * process. */
#ifndef PC_APP_APP_H
#define PC_APP_APP_H
#include <uv.h>

#include "core/config.h"
#include "http/server.h"
#include "kv/kv.h"
#include "store/db.h"

typedef struct pc_app {
    uv_loop_t *loop;
    pc_config_t *cfg;
    pc_db_t *db;
    pc_kv_t *kv;
    pc_router_t *api;   /* merchant API, cashier, health */
    pc_router_t *admin; /* ops API */
    char node_id[64];
    int shutting_down;
} pc_app_t;

/* Route registration, one per subsystem. */
void pc_app_routes_health(pc_app_t *app);

#endif
