# workerd config for `make run`: the example edge on 127.0.0.1:8787, guarding
# a demo origin, syncing with tollgated on 127.0.0.1:8080.
# Run from the repository root after `make`:
#   node_modules/.bin/workerd serve deploy/workerd/config.capnp
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    (name = "origin", worker = .origin),
    (name = "coordinator", external = (address = "127.0.0.1:8080", http = ())),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8787", http = (), service = "edge"),
  ],
);

const edge :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "tollgate.mjs", esModule = embed "../../edge-module/js/tollgate.mjs"),
    (name = "challenge.mjs", esModule = embed "../../edge-module/js/challenge.mjs"),
    (name = "tollgate.wasm", wasm = embed "../../build/tollgate.wasm"),
  ],
  compatibilityDate = "2024-09-23",
  bindings = [
    (name = "ORIGIN", service = "origin"),
    (name = "COORDINATOR", service = "coordinator"),
    # Secrets from the environment (deploy/run.sh exports them from run/keys).
    (name = "EDGE_KEY", fromEnvironment = "TOLLGATE_EDGE_KEY"),
    (name = "CLEARANCE_KEY", fromEnvironment = "TOLLGATE_CLEARANCE_KEY"),
    # Unset in `make run`: the widget loads from its provider.
    (name = "CAPTCHA_SCRIPT_URL", fromEnvironment = "TOLLGATE_CAPTCHA_SCRIPT_URL"),
  ],
);

const origin :Workerd.Worker = (
  modules = [(name = "origin.js", esModule = embed "origin.js")],
  compatibilityDate = "2024-09-23",
);
