// A tiny demo origin for `make run`: says hello and what it was asked.
export default {
  async fetch(req) {
    const url = new URL(req.url);
    return Response.json({ origin: "demo", method: req.method, path: url.pathname, at: new Date().toISOString() });
  },
};
