// The stock x402 fetch client (@x402/fetch with @x402/evm's exact scheme and a viem account)
// buys one article, then sends the very payment header it paid with again, without any proof
// of its key. Prints one JSON line: what each of the two requests answered.
//
//   node tests/js/x402_fetch_read.mjs URL PRIVATE_KEY NETWORK TOKEN_ADDRESS
import { wrapFetchWithPaymentFromConfig, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const [url, key, network, asset] = process.argv.slice(2);
const sent = [];
const recording = async (input, init) => {
  const request = new Request(input, init);
  const header = request.headers.get("PAYMENT-SIGNATURE");
  if (header) sent.push(header);
  return fetch(request);
};
const pay = wrapFetchWithPaymentFromConfig(recording, {
  schemes: [{ network: "eip155:*", client: new ExactEvmScheme(privateKeyToAccount(key)) }],
  // Like x402's Python client, it pays only tokens it knows unless one is added.
  spendControls: { allowedAssets: [{ network, asset, maxAmountPerPayment: "300000" }] },
});

const first = await pay(url);
const firstBody = await first.json();
const settlement = first.headers.get("PAYMENT-RESPONSE");
const again = await fetch(url, { headers: { "PAYMENT-SIGNATURE": sent[sent.length - 1] } });
console.log(
  JSON.stringify({
    first: {
      status: first.status,
      body: firstBody,
      settlement: settlement ? decodePaymentResponseHeader(settlement) : null,
    },
    payments: sent.length,
    again: { status: again.status, body: await again.json() },
  }),
);
