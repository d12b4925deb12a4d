# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_overlay_global_optspecs
    string join \n h/help V/version
end

function __fish_overlay_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_overlay_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_overlay_using_subcommand
    set -l cmd (__fish_overlay_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c overlay -n "__fish_overlay_needs_command" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_needs_command" -s V -l version -d 'Print version'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "manpage" -d 'Print the man page (roff)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "reference" -d 'Print the command-line reference as markdown (docs/configuration.md is made from it)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "join" -d 'Join an overlay with a token from the relay\'s operator (needs root)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "up" -d 'Start the daemon again after `overlay down`'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "down" -d 'Stop the daemon; routes and DNS are restored'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "leave" -d 'Deregister from the relay and remove this node\'s state'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "daemon" -d 'Run the node daemon in the foreground (what a service manager runs)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "status" -d 'Show the connection state'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "services" -d 'List every service instance, local, remote and on other nodes'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "resolve" -d 'Show what a name resolves to and which rule chose it'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "register" -d 'Register a service by hand (`overlay dev` does this for its services)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "unregister" -d 'Remove a service registered by hand'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "dev" -d 'Run the local services of overlay.toml or a Procfile, as your user'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "run" -d 'Run one service ad hoc: `overlay run NAME [--port P] [--tag T] -- CMD ARGS...`'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "logs" -d 'Show the logs of `overlay dev` services, one or all merged by time'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "ps" -d 'Show the services of the running `overlay dev`: state, port, restarts, last exit'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "restart" -d 'Build and restart a service of the running `overlay dev`, without disturbing callers'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "stop" -d 'Stop a service of the running `overlay dev`'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "start" -d 'Start a stopped service of the running `overlay dev`'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "traffic" -d 'Show captured HTTP exchanges and connections, one line each (`-f` to follow)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "inspect" -d 'Print the web inspector\'s URL, with the token that opens it (for you only)'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "capture" -d 'Write the overlay packets (decrypted, as on the TUN) to a pcap file'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "intercept" -d 'Send the remote environment\'s callers of a service to this laptop\'s instance: all of them, or requests with `--header NAME=VALUE`; `--list` shows every laptop\'s, `--stop` ends'
complete -c overlay -n "__fish_overlay_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c overlay -n "__fish_overlay_using_subcommand completions" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand manpage" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand reference" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand join" -l name -d 'The node\'s name in the overlay (default: this machine\'s host name)' -r
complete -c overlay -n "__fish_overlay_using_subcommand join" -l transport -d 'Which way to the relay: `auto` (UDP; the relay\'s URL from the token when UDP gets no answer within 3 s; back to UDP when it answers again), `udp` or `tcp`. Saved for the daemon' -r
complete -c overlay -n "__fish_overlay_using_subcommand join" -l no-start -d 'Do not start the daemon (a service manager will run `overlay daemon`)'
complete -c overlay -n "__fish_overlay_using_subcommand join" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand up" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand down" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand leave" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l config -d 'Run from a wg-quick style config (as printed by `overlay-relay peer add --wireguard-config`) instead of the settings `overlay join` saved' -r -F
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l interface -d 'The TUN device name' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l name -d 'The node\'s name with --config (default: the config file\'s name)' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l cpu-latency -d 'While exchanges follow each other within 20 ms, ask the kernel to keep idle CPUs quick to wake (/dev/cpu_dma_latency) until 20 ms after the last packet: `auto` when the relay is under 2 ms away, `on` always, `off` never (idle CPUs poll while it is held: power)' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l transport -d 'Which way to the relay: `auto` (UDP, the relay\'s URL when UDP gets no answer, back to UDP when it answers again), `udp` or `tcp` (default: what `overlay join` saved)' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l relay-url -d 'The relay\'s URL for the transport over TCP (default: the one from the join token; a --config file has none)' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l inspect-listen -d 'Where the web inspector listens ("off" disables it)' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l capture-body-cap -d 'Bytes of each request and response body kept in the capture' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l capture-buffer -d 'Bytes of records kept in memory; the oldest go first' -r
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l proto-path -d 'Directories of `.proto` files: captured gRPC messages are shown with their field names (repeat the flag, or separate directories with `:` in the variable)' -r -F
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l no-dns-config -d 'Leave the system resolver alone (names work through 100.100.100.100 directly)'
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -l capture-off -d 'Start with the capture paused (listeners splice without a tee, the TUN is not tapped); `overlay traffic --resume` starts it'
complete -c overlay -n "__fish_overlay_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand status" -l json -d 'Print JSON'
complete -c overlay -n "__fish_overlay_using_subcommand status" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand services" -l json -d 'Print JSON'
complete -c overlay -n "__fish_overlay_using_subcommand services" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand resolve" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand register" -l port -d 'The port callers use' -r
complete -c overlay -n "__fish_overlay_using_subcommand register" -l tag -d 'A variant tag (`v2` makes it reachable as `v2.NAME`)' -r
complete -c overlay -n "__fish_overlay_using_subcommand register" -l target -d 'Forward the overlay address to this local port (127.0.0.1); without it the service listens on its overlay address itself' -r
complete -c overlay -n "__fish_overlay_using_subcommand register" -l json -d 'Print JSON'
complete -c overlay -n "__fish_overlay_using_subcommand register" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand unregister" -l tag -d 'The variant tag' -r
complete -c overlay -n "__fish_overlay_using_subcommand unregister" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand dev" -s f -l file -d 'The config: an overlay.toml or a Procfile (default: ./overlay.toml, else ./Procfile)' -r -F
complete -c overlay -n "__fish_overlay_using_subcommand dev" -l local -d 'Run without the overlay daemon: no overlay addresses or names, services on 127.0.0.1'
complete -c overlay -n "__fish_overlay_using_subcommand dev" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand run" -l port -d 'The port callers use' -r
complete -c overlay -n "__fish_overlay_using_subcommand run" -l tag -d 'A variant tag: the service is reachable as TAG.NAME' -r
complete -c overlay -n "__fish_overlay_using_subcommand run" -l health-http -d 'Ready when GET PATH on $PORT answers below 500 (default: when $PORT accepts connections)' -r
complete -c overlay -n "__fish_overlay_using_subcommand run" -l local -d 'Run without the overlay daemon (see `overlay dev --local`)'
complete -c overlay -n "__fish_overlay_using_subcommand run" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand logs" -s n -l lines -d 'How many of the last lines to print (0: all)' -r
complete -c overlay -n "__fish_overlay_using_subcommand logs" -s f -l follow -d 'Keep printing new lines'
complete -c overlay -n "__fish_overlay_using_subcommand logs" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand ps" -l json -d 'Print a JSON list of the services (the fields of the table, and `name`, `tag`)'
complete -c overlay -n "__fish_overlay_using_subcommand ps" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand restart" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand stop" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand start" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -l filter -d 'Filters as in the inspector, e.g. `status=5xx&method=POST`' -r
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -s n -l lines -d 'At most this many of the newest records (before following)' -r
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -s f -l follow -d 'Keep printing new exchanges and flows'
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -l json -d 'JSON: an array, or one object per line with -f'
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -l reveal -d 'Show credentials in request targets (`?token=...`) instead of masking them'
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -l pause -d 'Stop recording new connections (open ones are recorded to their end); records stay'
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -l resume -d 'Record again after `--pause` (or a daemon started with OVERLAY_CAPTURE_OFF=1)'
complete -c overlay -n "__fish_overlay_using_subcommand traffic" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand inspect" -l json -d 'Print `{"url": ..., "token": ...}`'
complete -c overlay -n "__fish_overlay_using_subcommand inspect" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand capture" -s w -l write -d 'The pcap file to write ("-" for stdout)' -r
complete -c overlay -n "__fish_overlay_using_subcommand capture" -l service -d 'Only packets from or to this service\'s addresses' -r
complete -c overlay -n "__fish_overlay_using_subcommand capture" -l duration -d 'Stop after this long (`30s`, `5m`); default: until Ctrl-C' -r
complete -c overlay -n "__fish_overlay_using_subcommand capture" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand intercept" -l header -d 'Only requests carrying this header with exactly this value (per request on HTTP/1.1, per stream on HTTP/2 and gRPC); without it, every connection' -r
complete -c overlay -n "__fish_overlay_using_subcommand intercept" -l stop -d 'End this laptop\'s intercept of SERVICE: its callers go back to the remote service'
complete -c overlay -n "__fish_overlay_using_subcommand intercept" -l list -d 'List the active intercepts of every laptop, with their owner'
complete -c overlay -n "__fish_overlay_using_subcommand intercept" -l json -d 'Print JSON'
complete -c overlay -n "__fish_overlay_using_subcommand intercept" -s h -l help -d 'Print help'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "manpage" -d 'Print the man page (roff)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "reference" -d 'Print the command-line reference as markdown (docs/configuration.md is made from it)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "join" -d 'Join an overlay with a token from the relay\'s operator (needs root)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "up" -d 'Start the daemon again after `overlay down`'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "down" -d 'Stop the daemon; routes and DNS are restored'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "leave" -d 'Deregister from the relay and remove this node\'s state'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "daemon" -d 'Run the node daemon in the foreground (what a service manager runs)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "status" -d 'Show the connection state'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "services" -d 'List every service instance, local, remote and on other nodes'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "resolve" -d 'Show what a name resolves to and which rule chose it'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "register" -d 'Register a service by hand (`overlay dev` does this for its services)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "unregister" -d 'Remove a service registered by hand'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "dev" -d 'Run the local services of overlay.toml or a Procfile, as your user'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "run" -d 'Run one service ad hoc: `overlay run NAME [--port P] [--tag T] -- CMD ARGS...`'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "logs" -d 'Show the logs of `overlay dev` services, one or all merged by time'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "ps" -d 'Show the services of the running `overlay dev`: state, port, restarts, last exit'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "restart" -d 'Build and restart a service of the running `overlay dev`, without disturbing callers'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "stop" -d 'Stop a service of the running `overlay dev`'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "start" -d 'Start a stopped service of the running `overlay dev`'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "traffic" -d 'Show captured HTTP exchanges and connections, one line each (`-f` to follow)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "inspect" -d 'Print the web inspector\'s URL, with the token that opens it (for you only)'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "capture" -d 'Write the overlay packets (decrypted, as on the TUN) to a pcap file'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "intercept" -d 'Send the remote environment\'s callers of a service to this laptop\'s instance: all of them, or requests with `--header NAME=VALUE`; `--list` shows every laptop\'s, `--stop` ends'
complete -c overlay -n "__fish_overlay_using_subcommand help; and not __fish_seen_subcommand_from completions manpage reference join up down leave daemon status services resolve register unregister dev run logs ps restart stop start traffic inspect capture intercept help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
