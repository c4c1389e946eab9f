# bash completion for wardenctl, installed where bash-completion looks for it
# (/usr/share/bash-completion/completions/wardenctl). Subcommands and options are read from
# `wardenctl --help` and `wardenctl SUBCOMMAND --help` as the user types, so that they cannot
# drift from the CLI's own definitions; job ids come from `wardenctl status --json`.

# The words of a help text's list: subcommands under "Subcommands:", or every --option.
_wardenctl_subcommands() {
  sed -n '/^Subcommands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p'
}
_wardenctl_options() {
  sed -n 's/^  \(-[a-zA-Z],\)\{0,1\}\(--[a-z][a-z-]*\).*/\2/p'
}
# The ids of the jobs wardend shows the user; its arguments are wardenctl's global options.
_wardenctl_jobs() {
  wardenctl "$@" status --json 2>/dev/null | sed -n 's/^    "id": \([0-9]*\).*/\1/p'
}

_wardenctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local sub="" i
  local -a global=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      --socket | --timeout) global+=("${COMP_WORDS[i]}" "${COMP_WORDS[i+1]}"); ((i++)) ;;
      -*) ;;
      *) sub=${COMP_WORDS[i]}; break ;;
    esac
  done
  case $prev in
    --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --job) COMPREPLY=($(compgen -W "$(_wardenctl_jobs "${global[@]}")" -- "$cur")); return ;;
    --file | --dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  local help
  if [[ -z $sub ]]; then
    help=$(wardenctl --help 2>/dev/null)
  else
    help=$(wardenctl "$sub" --help 2>/dev/null)
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_wardenctl_options <<<"$help")" -- "$cur"))
  elif [[ -z $sub ]]; then
    COMPREPLY=($(compgen -W "$(_wardenctl_subcommands <<<"$help")" -- "$cur"))
  elif [[ $help == *"JOB UINT"* ]]; then  # a job id as the positional (status JOB)
    COMPREPLY=($(compgen -W "$(_wardenctl_jobs "${global[@]}")" -- "$cur"))
  fi
}
complete -F _wardenctl wardenctl
