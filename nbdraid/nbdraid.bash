# bash completion for nbdraid(8), the nbdkit-raid command.
#
# Completes the subcommands, the options of each (and the common ones, -C,
# --json, --help, --version, before or after the subcommand), the values of
# --level, --layout and --consistency, member paths, and set's keys.

_nbdraid ()
{
  local cur prev words cword
  if declare -F _init_completion >/dev/null; then
    _init_completion -s || return
  else                          # without bash-completion: no --opt=value split
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi

  local subcommands="create examine status reshape start freeze abort check
    repair wait fail remove add replace resize set"
  local common="-C --control= --json --help --version"
  local layouts="left-asymmetric right-asymmetric left-symmetric
    right-symmetric parity-first parity-last left-asymmetric-6
    right-asymmetric-6 left-symmetric-6 right-symmetric-6 parity-first-6 none"

  # The subcommand: the first word that is not an option or its argument.
  local i sub=
  for ((i = 1; i < cword; i++)); do
    case ${words[i]} in
      -C|--control|--level|--chunk|--layout|--size|--consistency|\
      --data-offset|--spare|--count|--interval|--raid-devices|--add|\
      --timeout|--with)
        [[ ${words[i + 1]} == = ]] && ((i++))
        ((i++)) ;;
      -*) ;;
      *) sub=${words[i]}; break ;;
    esac
  done

  case $prev in
    -C|--control|--spare|--add|--with)
      _nbdraid_files; return ;;
    --level)
      COMPREPLY=($(compgen -W "0 1 4 5 6" -- "$cur")); return ;;
    --layout)
      COMPREPLY=($(compgen -W "$layouts" -- "$cur")); return ;;
    --consistency)
      COMPREPLY=($(compgen -W "journal bitmap resync" -- "$cur")); return ;;
    --chunk|--size|--data-offset|--raid-devices|--count|--interval|--timeout)
      return ;;
  esac

  local opts=
  case $sub in
    create) opts="--level= --chunk= --layout= --size= --consistency=
                  --data-offset= --assume-clean --spare= --force" ;;
    status) opts="--watch --count= --interval= --test" ;;
    reshape) opts="--level= --layout= --chunk= --raid-devices= --add= --force
                   --start --wait" ;;
    wait) opts="--timeout=" ;;
    add) opts="--force" ;;
    replace) opts="--with=" ;;
    resize) opts="--force" ;;
  esac

  if [[ $cur == -* || -z $sub && -z $cur && $cword -gt 1 && ${words[cword - 1]} == -* ]]; then
    COMPREPLY=($(compgen -W "$opts $common" -- "$cur"))
    [[ ${COMPREPLY[*]} == *= ]] && compopt -o nospace 2>/dev/null
    return
  fi
  if [[ -z $sub ]]; then
    COMPREPLY=($(compgen -W "$subcommands" -- "$cur"))
    return
  fi
  case $sub in
    create|examine|fail|remove|add|replace)
      _nbdraid_files ;;
    resize)
      COMPREPLY=($(compgen -W "max" -- "$cur")) ;;
    set)
      COMPREPLY=($(compgen -W "speed-min= speed-max=" -- "$cur"))
      compopt -o nospace 2>/dev/null ;;
  esac
}

_nbdraid_files ()
{
  if declare -F _filedir >/dev/null; then
    _filedir
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}

complete -F _nbdraid nbdraid
