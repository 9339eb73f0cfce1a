/* The ops console on the admin listener: GET /console (the page) and GET
 * /console/{file} (its script and style). The page itself holds nothing
 * secret; it asks for the admin bearer token once, keeps it in
 * sessionStorage, and calls the /admin API on the same origin with it, so
 * the API's own filter guards every action. */
#include "api/app.h"
#include "web/assets.h"

#include <string.h>

static void console_page(pc_http_req_t *req, void *data)
{
    (void)data;
    pc_web_send(req, 200, pc_web_asset(PC_WEB_CONSOLE, "index.html"));
}

static void console_file(pc_http_req_t *req, void *data)
{
    (void)data;
    pc_web_send(req, 200, pc_web_asset(PC_WEB_CONSOLE, pc_http_req_param(req, "file")));
}

void pc_app_routes_console(pc_app_t *app)
{
    pc_router_add(app->admin, "GET", "/console", console_page, app);
    pc_router_add(app->admin, "GET", "/console/{file}", console_file, app);
}
