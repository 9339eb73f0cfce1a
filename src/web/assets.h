/* The web pages paycore serves: the hosted cashier (web/cashier/, on the API
 * listener) and the ops console (web/console/, on the admin listener). Their
 * files are compiled into the binary (cmake/Embed.cmake), so serving one is a
 * table look-up: no file is read on a request path. Every page and asset goes
 * out with the same security headers: a Content-Security-Policy that allows
 * scripts, styles, images and requests from this origin only (no third-party
 * script can run), no framing, no referrer (a cashier link carries its token
 * in the path), no MIME sniffing, and no caching of anything that may show a
 * buyer's data. Needs http/server. */
#ifndef PC_WEB_ASSETS_H
#define PC_WEB_ASSETS_H
#include "core/embed.h"
#include "http/server.h"

typedef enum { PC_WEB_CASHIER, PC_WEB_CONSOLE } pc_web_site_t;

/* The file of site named name ("index.html"), or NULL. Static data. */
const pc_embedded_file_t *pc_web_asset(pc_web_site_t site, const char *name);

/* Adds the security headers every answer of the web pages carries (call
 * before answering, also for the JSON of the pages' own API). */
void pc_web_headers(pc_http_req_t *req);

/* Answers req with file f (content type from its extension) and the security
 * headers; a missing f answers 404. */
void pc_web_send(pc_http_req_t *req, int status, const pc_embedded_file_t *f);

#endif
