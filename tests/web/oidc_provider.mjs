// A real OpenID Connect provider for the console's company sign-in tests: node-oidc-provider (npm, installed by
// `npm ci --prefix deploy`) on 127.0.0.1, with its development login and consent pages.
//
//   node tests/web/oidc_provider.mjs PORT USERS_JSON REDIRECT_URI
//
// Any login name signs in (the development pages take any password); each user's name, email and groups are
// read from USERS_JSON at every sign-in, so a test can change a user's groups between two sign-ins.
import { readFileSync } from "node:fs";
import Provider from "../../deploy/node_modules/oidc-provider/lib/index.js";

const [port, usersFile, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "kadapt",
      client_secret: "kadapt-test-secret",
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: { openid: ["sub"], profile: ["name"], email: ["email"], groups: ["groups"] },
  scopes: ["openid", "profile", "email", "groups"],
  conformIdTokenClaims: false, // the requested claims go into the ID token itself
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["kadapt-test-cookie-key"] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const users = JSON.parse(readFileSync(usersFile, "utf8"));
        const user = users[id] ?? {};
        return { sub: id, name: user.name ?? id, email: user.email ?? `${id}@example.com`, groups: user.groups ?? [] };
      },
    };
  },
});

provider.listen(Number(port), "127.0.0.1", () => console.log(`oidc provider ready on ${issuer}`));
