// A certified OpenID provider (the npm package oidc-provider) on loopback, for tests/integration/
// test_oidc_provider.py: node provider.mjs <port> <redirect_uri>
//
// Public clients (PKCE required, no secret) signing ID tokens with RS256, ES256 and EdDSA, and
// one more client for wrong-audience tokens; development login and consent pages
// (devInteractions: any login, any password). Its keys are made afresh at every start, so a
// restart on the same port is a key rotation: new kids. Prints one JSON line when listening
// ({"event": "ready", "issuer", "kids"}) and one per request of its JWK Set ({"event": "jwks"}).
import { generateKeyPairSync, randomBytes } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.argv[2]);
const redirectUri = process.argv[3];
const issuer = `http://127.0.0.1:${port}`;

function key(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  const kid = `${alg.toLowerCase()}-${randomBytes(4).toString("hex")}`;
  return { ...privateKey.export({ format: "jwk" }), kid, alg, use: "sig" };
}

const keys = [
  key("rsa", { modulusLength: 2048 }, "RS256"),
  key("ec", { namedCurve: "P-256" }, "ES256"),
  key("ed25519", {}, "EdDSA"),
];

function client(clientId, alg) {
  return {
    client_id: clientId,
    application_type: "native", // a loopback http redirect URI is allowed for these
    token_endpoint_auth_method: "none",
    redirect_uris: [redirectUri],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    id_token_signed_response_alg: alg,
  };
}

const provider = new Provider(issuer, {
  clients: [
    client("passcode-rs256", "RS256"),
    client("passcode-es256", "ES256"),
    client("passcode-eddsa", "EdDSA"),
    client("someone-else", "RS256"),
  ],
  jwks: { keys },
  enabledJWA: { idTokenSigningAlgValues: ["RS256", "ES256", "EdDSA"] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  claims: { openid: ["sub"], profile: ["name"] },
  // The name in the ID token itself (not only at the userinfo endpoint), as our provider does.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return { accountId: id, claims: async () => ({ sub: id, name: `Tester ${id}` }) };
  },
});

provider.use(async (ctx, next) => {
  if (ctx.path === "/jwks") console.log(JSON.stringify({ event: "jwks" }));
  await next();
});

provider.listen(port, "127.0.0.1", () => {
  console.log(JSON.stringify({ event: "ready", issuer, kids: keys.map((k) => k.kid) }));
});
