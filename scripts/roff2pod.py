#!/usr/bin/env python3
"""Convert the subset of man(7) roff used by nbdkit-raid's pages to POD.

Usage: roff2pod.py PAGE.roff > PAGE.pod
Handles .TH .SH .SS .PP .LP .TP .IP .RS .RE .nf .fi .EX .EE and the font
macros .B .I .BR .RB .BI .IB .IR .RI, inline \\fB \\fI \\fR \\fP, and the
escapes the pages use.  Man page references NAME(N) become L<NAME(N)>.
"""
import re
import shlex
import sys

ESC = {
    r'\(em': '\u2014', r'\(bu': '\u2022', r'\(aq': "'", r'\(dq': '"',
    r'\(lq': '\u201c', r'\(rq': '\u201d', r'\(rs': '\\', r'\e': '\\',
    r'\-': '-', r'\&': '', r'\|': '', r'\^': '',
}


def pod_escape(s):
    return s.replace('<', '\0LT\0').replace('>', '\0GT\0')


def finish_escape(s):
    return s.replace('\0LT\0', 'E<lt>').replace('\0GT\0', 'E<gt>')


def inline(s, base=None):
    """roff inline text -> POD (escapes, \\f fonts); base: the font the
    text starts in (a font macro's), \\fR switches to roman, \\fP back."""
    s = pod_escape(s)
    # non-breaking spaces: words joined by '\ ' -> S<...>
    s = s.replace('\\ ', '\x01')
    s = re.sub(r'(\S*\x01\S*)', lambda m: 'S<' + m.group(1).replace('\x01', ' ') + '>', s)
    for k, v in ESC.items():
        s = s.replace(k, v)
    out = []
    cur = base
    prev = base
    i = 0
    buf = ''
    while i < len(s):
        if s.startswith('\\f', i) and i + 2 < len(s):
            f = s[i + 2]
            if buf:
                out.append(wrap(cur, buf))
                buf = ''
            if f == 'P':
                cur, prev = prev, cur
            else:
                prev, cur = cur, {'B': 'B', 'I': 'I'}.get(f)
            i += 3
            continue
        buf += s[i]
        i += 1
    if buf:
        out.append(wrap(cur, buf))
    return ''.join(out)


def wrap(font, text):
    if not font or text == '':
        return text
    if text.strip() == '':
        return text
    core = text.strip(' ')
    lead = text[:len(text) - len(text.lstrip(' '))]
    trail = text[len(text.rstrip(' ')):]
    return '%s%s<%s>%s' % (lead, font, core, trail)


def manref(words):
    """Turn ['name', '(N)...'] alternations into L<name(N)>."""
    return words


def font_macro(macro, args):
    fonts = {'B': 'B', 'I': 'I', 'R': None}
    if len(macro) == 1:
        return inline(' '.join(args), fonts[macro])
    res = []
    for n, a in enumerate(args):
        res.append(inline(a, fonts[macro[n % 2]]))
    return ''.join(res)


def split_args(line):
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        return line.split()


def roff_args(rest):
    # roff quoting: "..." groups; backslashes kept.
    args = []
    i = 0
    rest = rest.strip()
    while i < len(rest):
        if rest[i] == ' ':
            i += 1
            continue
        if rest[i] == '"':
            j = i + 1
            a = ''
            while j < len(rest):
                if rest[j] == '"':
                    if j + 1 < len(rest) and rest[j + 1] == '"':
                        a += '"'
                        j += 2
                        continue
                    break
                a += rest[j]
                j += 1
            args.append(a)
            i = j + 1
        else:
            j = i
            while j < len(rest) and (rest[j] != ' ' or rest[j - 1] == '\\'):
                j += 1
            args.append(rest[i:j])
            i = j
    return args


def link_manrefs(text):
    # B<name>(N) or name(N) -> L<name(N)>
    text = re.sub(r'B<([A-Za-z0-9_.:-]+)>\((\d)\)', r'L<\1(\2)>', text)
    return text


def reflow(txt):
    """Join a paragraph's lines and wrap them at 72 columns, never inside
    S<...> and never starting a line with '='."""
    import textwrap
    prot = re.sub(r'S<[^<>]*(?:<[^<>]*>[^<>]*)*>', lambda m: m.group(0).replace(' ', '\x02'), txt)
    words = prot.split()
    lines = textwrap.wrap(' '.join(words), 72, break_long_words=False, break_on_hyphens=False)
    fixed = []
    for l in lines:
        if l.startswith('=') and fixed:
            first, _, rest = l.partition(' ')
            fixed[-1] += ' ' + first
            l = rest
        if l:
            fixed.append(l)
    return '\n'.join(fixed).replace('\x02', ' ')


def verbatim_line(s):
    s = re.sub(r'\\f[BIRP]', '', s)
    for k, v in ESC.items():
        s = s.replace(k, v)
    s = s.replace('\\ ', ' ')
    return ' ' + s if s else ''


def main(path):
    lines = open(path, encoding='utf-8').read().split('\n')
    out = []
    para = []          # current text paragraph (POD lines)
    list_depth = []    # stack of 'tp' / 'ip' / 'rs'
    verb = None        # verbatim lines while in .nf/.EX
    pending_tag = False
    tag_line = None

    def flush():
        nonlocal para
        if para:
            out.append(reflow(link_manrefs('\n'.join(para))))
            out.append('')
            para = []

    def close_lists(to=0):
        while len(list_depth) > to:
            flush()
            list_depth.pop()
            out.append('=back')
            out.append('')

    def close_items():
        # close tp/ip lists above the innermost .RS
        while list_depth and list_depth[-1] in ('tp', 'ip'):
            flush()
            list_depth.pop()
            out.append('=back')
            out.append('')

    for raw in lines:
        if verb is not None:
            if raw.startswith('.fi') or raw.startswith('.EE'):
                out.extend(verb)
                out.append('')
                verb = None
                continue
            if raw.startswith('.RS') or raw.startswith('.RE'):
                continue
            if raw.startswith('.PP'):
                verb.append('')
                continue
            if raw.startswith('.'):
                m = re.match(r'\.(B|I|BR|RB|BI|IB|IR|RI)\s(.*)', raw)
                if m:
                    sep = ' ' if len(m.group(1)) == 1 else ''
                    verb.append(verbatim_line(sep.join(roff_args(m.group(2)))))
                    continue
                verb.append(' [UNHANDLED ' + raw + ']')
                continue
            verb.append(verbatim_line(raw))
            continue
        if pending_tag:
            pending_tag = False
            m = re.match(r'\.(B|I|BR|RB|BI|IB|IR|RI)\s(.*)', raw)
            if m:
                t = font_macro(m.group(1), roff_args(m.group(2)))
            else:
                t = inline(raw)
            out.append('=item ' + finish_escape(link_manrefs(t)))
            out.append('')
            continue
        if raw.startswith('.\\"'):
            continue
        if raw.startswith('.TH'):
            continue
        m = re.match(r'\.(SH|SS)\s+(.*)', raw)
        if m:
            flush()
            close_lists(0)
            title = ' '.join(roff_args(m.group(2)))
            title = inline(title)
            out.append(('=head1 ' if m.group(1) == 'SH' else '=head2 ') + finish_escape(title))
            out.append('')
            continue
        if raw in ('.PP', '.LP', '.P'):
            flush()
            close_items()
            continue
        if raw.startswith('.TP'):
            flush()
            if not list_depth or list_depth[-1] != 'tp':
                if list_depth and list_depth[-1] == 'ip':
                    close_items()
                out.append('=over 4')
                out.append('')
                list_depth.append('tp')
            pending_tag = True
            continue
        m = re.match(r'\.IP\s*(.*)', raw)
        if raw.startswith('.IP'):
            flush()
            args = roff_args(m.group(1))
            if args and args[0] == '\\(bu':
                if not list_depth or list_depth[-1] != 'ip':
                    if list_depth and list_depth[-1] == 'tp':
                        pass
                    out.append('=over 4')
                    out.append('')
                    list_depth.append('ip')
                out.append('=item *')
                out.append('')
            elif args:
                if not list_depth or list_depth[-1] != 'tp':
                    out.append('=over 4')
                    out.append('')
                    list_depth.append('tp')
                out.append('=item ' + finish_escape(inline(args[0])))
                out.append('')
            # bare .IP: continue the current item
            continue
        if raw.startswith('.RS'):
            flush()
            out.append('=over 4')
            out.append('')
            list_depth.append('rs')
            continue
        if raw.startswith('.RE'):
            flush()
            while list_depth and list_depth[-1] != 'rs':
                list_depth.pop()
                out.append('=back')
                out.append('')
            if list_depth:
                list_depth.pop()
                out.append('=back')
                out.append('')
            continue
        if raw.startswith('.nf') or raw.startswith('.EX'):
            flush()
            verb = []
            continue
        if raw.startswith('.fi') or raw.startswith('.EE'):
            continue
        m = re.match(r'\.(B|I|BR|RB|BI|IB|IR|RI)(?:\s(.*))?$', raw)
        if m:
            para.append(finish_escape(font_macro(m.group(1), roff_args(m.group(2) or ''))))
            continue
        if raw.startswith('.'):
            para.append('[UNHANDLED ' + raw + ']')
            continue
        if raw.strip() == '':
            flush()
            continue
        t = finish_escape(inline(raw.lstrip()))
        if t.startswith('='):
            t = 'Z<>' + t
        para.append(t)
    flush()
    close_lists(0)
    text = '\n'.join(out)
    text = re.sub(r'\n{3,}', '\n\n', text)
    # =over immediately followed by =back (empty .RS around verbatim) is fine
    sys.stdout.write('=encoding utf8\n\n' + text.strip() + '\n')


main(sys.argv[1])
