/* QR codes for the hosted cashier (a "scan to pay" payload shown to the
 * buyer): text in, an SVG image out, drawn server-side so the page needs no
 * script of anyone else's. Needs libqrencode. */
#ifndef PC_WEB_QR_H
#define PC_WEB_QR_H
#include <stddef.h>

/* Encodes text (1..1024 bytes, error correction level M) as a standalone SVG
 * document with a four-module quiet zone; *len gets its length. Returns a
 * malloc'd, NUL-terminated string the caller frees, or NULL when the text is
 * empty, too long, or memory runs out. */
char *pc_qr_svg(const char *text, size_t *len);

#endif
