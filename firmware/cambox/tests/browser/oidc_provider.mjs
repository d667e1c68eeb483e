#!/usr/bin/env node
// A real OpenID Connect provider for the login tests: the npm package oidc-provider (an
// OpenID Certified implementation by Filip Skokan), on 127.0.0.1, with one public client
// (PKCE, no secret) whose redirect URI is the box's callback.
//
//   node firmware/cambox/tests/browser/oidc_provider.mjs <box-callback-url>
//
// Prints "issuer <url>" on stdout once it listens, then serves until killed (or stdin
// closes, so that a test that dies does not leave it behind). Its development login form
// takes any name and password; the account's claims are sub and name = the login, and
// groups = ["ops"] for logins starting with "op", else ["staff"].

import { createServer } from 'node:net';
import Provider from 'oidc-provider';

const callback = process.argv[2];
if (!callback) {
  process.stderr.write('usage: node oidc_provider.mjs <box-callback-url>\n');
  process.exit(2);
}

/** A free loopback port: the issuer URL names the port before the provider listens. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const port = await freePort();
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'cambox',
    redirect_uris: [callback],
    token_endpoint_auth_method: 'none',
    response_types: ['code'],
    grant_types: ['authorization_code'],
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['name'], groups: ['groups'] },
  // The scopes' claims go into the ID token itself, which is what the box reads.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['cambox-test-only'] },
  findAccount: (_ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, name: id, groups: id.startsWith('op') ? ['ops'] : ['staff'] }),
  }),
});
// Quiet: the dev interactions warn on every start that they are for development.
provider.on('server_error', (_ctx, err) => process.stderr.write(`oidc-provider: ${err}\n`));
provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`issuer ${issuer}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
