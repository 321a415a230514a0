# workerd in production: the example edge (worker.js) syncing with tollgated
# over HTTPS on a private address. workerd's outbound TLS checks the
# coordinator's certificate against coordinator-ca.pem (the CA that signed
# tollgated's --tls-cert; copy it next to this file) for the name
# certificateHost, whatever address it dials. Secrets come from the
# environment (a secrets manager or a root-only systemd EnvironmentFile):
#   TOLLGATE_EDGE_KEY       this edge's sync key (the key file's edge line)
#   TOLLGATE_CLEARANCE_KEY  the clearance key (the key file's clearance line)
# tests/integration/tls.test.mjs runs this file, its address and port
# swapped for the test's.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    (name = "origin", worker = .origin),
    (name = "coordinator", external = (
      address = "10.0.0.10:8443",
      https = (
        tlsOptions = (trustedCertificates = [ embed "coordinator-ca.pem" ]),
        certificateHost = "coordinator.internal",
      ),
    )),
  ],
  sockets = [
    (name = "http", address = "*:8080", http = (), service = "edge"),
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
    (name = "EDGE_KEY", fromEnvironment = "TOLLGATE_EDGE_KEY"),
    (name = "CLEARANCE_KEY", fromEnvironment = "TOLLGATE_CLEARANCE_KEY"),
  ],
);

const origin :Workerd.Worker = (
  modules = [(name = "origin.js", esModule = embed "origin.js")],
  compatibilityDate = "2024-09-23",
);
