# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_overlay_relay_global_optspecs
    string join \n state= h/help V/version
end

function __fish_overlay_relay_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_overlay_relay_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_overlay_relay_using_subcommand
    set -l cmd (__fish_overlay_relay_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -s V -l version -d 'Print version'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "serve" -d 'Run the relay in the foreground'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "manpage" -d 'Print the man page (roff)'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "reference" -d 'Print the command-line reference as markdown (docs/configuration.md is made from it)'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "peer" -d 'Manage plain WireGuard peers'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "nodes" -d 'List registered nodes with their counters'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "stats" -d 'Relay-wide counters (drops not attributable to a peer, uptime)'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "services" -d 'List every service instance (node services and remote ones)'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "token" -d 'Manage join tokens'
complete -c overlay-relay -n "__fish_overlay_relay_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l listen -d 'UDP address for WireGuard and joins' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l network -d 'The overlay network' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l domain -d 'The DNS domain of the overlay' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l public-endpoint -d 'HOST:PORT nodes reach the relay at (defaults to --listen)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l tcp-listen -d 'TCP address serving the overlay as an HTTP/1.1 WebSocket upgrade, for nodes whose UDP cannot reach the relay (behind an HTTP ingress or proxy)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l public-url -d 'URL nodes reach --tcp-listen at, e.g. https://relay.example.com/overlay (put in tokens beside the UDP endpoint; its path is the one served). Default: http://TCP-LISTEN/overlay' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l tls-cert -d 'PEM certificate chain for TLS on --tcp-listen (with --tls-key), when no ingress terminates TLS in front of the relay' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l tls-key -d 'PEM private key for --tls-cert' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l tcp-max-per-source -d 'Streams from one source address at most on --tcp-listen (an ingress counts as one source)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l tcp-max-streams -d 'Streams at most on --tcp-listen (each buffers up to 128 KiB)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l catalog -d 'Catalog of remote services (TOML), re-read when it changes' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l mtu -d 'Inner MTU handed to peers' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l callback-listen -d 'TCP address of the HTTP callback router (routes by Host `[tag.]service.node.domain`); its IP is also where callback ports listen' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l callback-ports -d 'TCP ports handed to node services for callbacks, e.g. 30000-30999 (stable per service)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l callback-host -d 'The name or address the remote environment reaches the relay at, for callback URLs (default: the callback-listen address, or the public endpoint\'s host)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l metrics -d 'TCP address for Prometheus metrics (/metrics) and the health check (/healthz)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l on-demand-suffix -d 'Also look up names under this suffix on demand (repeatable, or comma-separated)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l on-demand-ttl -d 'How long a name looked up on demand stays mapped (e.g. 30m, 1h)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l max-flows-per-node -d 'Most concurrent TCP and UDP flows through the gateway per node' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l max-flows -d 'Most concurrent flows through the gateway in total' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l tcp-buffer-kib -d 'Largest buffer per direction of each proxied TCP connection, in KiB (smaller when the node nears its share of --gateway-buffer-mib)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l gateway-buffer-mib -d 'Memory for the buffers of all proxied TCP connections together, in MiB; each node gets a fair share, so one node cannot take it all' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l tcp-idle-timeout -d 'A proxied TCP connection without traffic this long is closed (e.g. 15m)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l udp-idle-timeout -d 'A UDP flow without traffic this long is forgotten (e.g. 60s)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l no-on-demand -d 'Do not look up remote names on demand (only the catalog is reachable)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -l new-key -d 'Make a new relay key when private.key is missing or damaged although the state holds nodes or tokens (they stop working: every node must join again); a good key is kept'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand serve" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand completions" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand completions" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand manpage" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand manpage" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand reference" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand reference" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and not __fish_seen_subcommand_from add remove help" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and not __fish_seen_subcommand_from add remove help" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and not __fish_seen_subcommand_from add remove help" -f -a "add" -d 'Register a peer and print its configuration'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and not __fish_seen_subcommand_from add remove help" -f -a "remove" -d 'Remove a peer'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and not __fish_seen_subcommand_from add remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from add" -l public-key -d 'The peer\'s public key; without it a key pair is generated and the private key printed' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from add" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from add" -l wireguard-config -d 'Print a wg-quick configuration for stock WireGuard clients (and `overlay daemon --config`)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from remove" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from help" -f -a "add" -d 'Register a peer and print its configuration'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a peer'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand peer; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand nodes" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand nodes" -l json -d 'Print JSON instead of a table'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand nodes" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand stats" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand stats" -l json -d 'Print JSON instead of a table'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand stats" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand services" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand services" -l json -d 'Print JSON instead of a table'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand services" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "create" -d 'Create a token and print it (one line to paste into `overlay join`)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "list" -d 'List tokens (secrets are never shown: only their hashes are kept)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "revoke" -d 'Revoke a token by id'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and not __fish_seen_subcommand_from create list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from create" -l uses -d 'How many nodes may join with it' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from create" -l ttl -d 'How long it stays valid (e.g. 30m, 24h, 7d)' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from create" -l name-prefix -d 'Prefix for the names of nodes that join with it' -r
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from create" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from list" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from list" -l json -d 'Print JSON instead of a table'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from revoke" -l state -d 'State directory (key, peers, admin socket)' -r -F
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a token and print it (one line to paste into `overlay join`)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "list" -d 'List tokens (secrets are never shown: only their hashes are kept)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke a token by id'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "serve" -d 'Run the relay in the foreground'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "manpage" -d 'Print the man page (roff)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "reference" -d 'Print the command-line reference as markdown (docs/configuration.md is made from it)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "peer" -d 'Manage plain WireGuard peers'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "nodes" -d 'List registered nodes with their counters'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "stats" -d 'Relay-wide counters (drops not attributable to a peer, uptime)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "services" -d 'List every service instance (node services and remote ones)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "token" -d 'Manage join tokens'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and not __fish_seen_subcommand_from serve completions manpage reference peer nodes stats services token help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and __fish_seen_subcommand_from peer" -f -a "add" -d 'Register a peer and print its configuration'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and __fish_seen_subcommand_from peer" -f -a "remove" -d 'Remove a peer'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "create" -d 'Create a token and print it (one line to paste into `overlay join`)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "list" -d 'List tokens (secrets are never shown: only their hashes are kept)'
complete -c overlay-relay -n "__fish_overlay_relay_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "revoke" -d 'Revoke a token by id'
