# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_extdrop_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_extdrop_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_extdrop_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_extdrop_using_subcommand
    set -l cmd (__fish_extdrop_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c extdrop -n "__fish_extdrop_needs_command" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_needs_command" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_needs_command" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "run" -d 'Watch every configured inbox until SIGTERM/SIGINT; SIGHUP reloads the configuration'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "once" -d 'Process every file present in the inboxes now, then exit (2 if any went to failed)'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "check" -d 'Validate the configuration and print a summary of watches and rules'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "explain" -d 'Show which watch and rule match file names, and the derived names'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "status" -d 'Per watch: files waiting, in progress, done and failed, and the newest failures'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "retry" -d 'Move failed files back into their inbox, removing their reports'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "upload" -d 'Upload one file with the configured endpoint and credentials, no folders involved'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "versions" -d 'The extension\'s versions in CodeArts and their attribution (draft, formal)'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "completions" -d 'Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell)'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "demo" -d 'A zero-setup sandbox with a built-in loopback stand-in of the CodeArts endpoint'
complete -c extdrop -n "__fish_extdrop_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c extdrop -n "__fish_extdrop_using_subcommand run" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand run" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand run" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand once" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand once" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand once" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand check" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand check" -l online -d 'Also obtain credentials / a token to prove they work'
complete -c extdrop -n "__fish_extdrop_using_subcommand check" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand check" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand explain" -l watch -d 'Only consider this watch' -r
complete -c extdrop -n "__fish_extdrop_using_subcommand explain" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand explain" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand explain" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand status" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand status" -l json -d 'Machine-readable output'
complete -c extdrop -n "__fish_extdrop_using_subcommand status" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand status" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand retry" -l watch -d 'Only this watch' -r
complete -c extdrop -n "__fish_extdrop_using_subcommand retry" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand retry" -l all -d 'Every failed file'
complete -c extdrop -n "__fish_extdrop_using_subcommand retry" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand retry" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand upload" -l plugin-name -d 'The extension name' -r
complete -c extdrop -n "__fish_extdrop_using_subcommand upload" -l business-type -d 'The business type' -r
complete -c extdrop -n "__fish_extdrop_using_subcommand upload" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand upload" -l no-check -d 'Skip the daemon\'s checks (names, size, empty file, the package check)'
complete -c extdrop -n "__fish_extdrop_using_subcommand upload" -l publish -d 'Also publish the uploaded version as official (it can never be replaced)'
complete -c extdrop -n "__fish_extdrop_using_subcommand upload" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand upload" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand versions" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand versions" -l json -d 'Machine-readable output'
complete -c extdrop -n "__fish_extdrop_using_subcommand versions" -s h -l help -d 'Print help'
complete -c extdrop -n "__fish_extdrop_using_subcommand versions" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand completions" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c extdrop -n "__fish_extdrop_using_subcommand completions" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand demo" -l dir -d 'Where to create the sandbox' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand demo" -s c -l config -d 'The configuration file' -r -F
complete -c extdrop -n "__fish_extdrop_using_subcommand demo" -l stand-in-only -d 'Start only the stand-ins (no daemon), to try `extdrop -c DIR/config.toml once`'
complete -c extdrop -n "__fish_extdrop_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c extdrop -n "__fish_extdrop_using_subcommand demo" -s V -l version -d 'Print version'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "run" -d 'Watch every configured inbox until SIGTERM/SIGINT; SIGHUP reloads the configuration'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "once" -d 'Process every file present in the inboxes now, then exit (2 if any went to failed)'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "check" -d 'Validate the configuration and print a summary of watches and rules'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "explain" -d 'Show which watch and rule match file names, and the derived names'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "status" -d 'Per watch: files waiting, in progress, done and failed, and the newest failures'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "retry" -d 'Move failed files back into their inbox, removing their reports'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "upload" -d 'Upload one file with the configured endpoint and credentials, no folders involved'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "versions" -d 'The extension\'s versions in CodeArts and their attribution (draft, formal)'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "completions" -d 'Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell)'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "demo" -d 'A zero-setup sandbox with a built-in loopback stand-in of the CodeArts endpoint'
complete -c extdrop -n "__fish_extdrop_using_subcommand help; and not __fish_seen_subcommand_from run once check explain status retry upload versions completions demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
