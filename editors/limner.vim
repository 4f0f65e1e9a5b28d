" limner.vim - stream a model's reply into the buffer you are editing.
"
" The whole buffer goes to `limner` on stdin; its output is written into the
" buffer as it arrives, at an insertion point that moves with your edits, so
" you can keep working while it streams. One request per buffer.
"
"   :Limner        (<leader>a)  chat / complete: the reply goes at the end
"   :LimnerInfill  (<leader>f)  fill in code at the cursor line
"   :LimnerStop    (<leader>s)  stop this buffer's request now
"
" Options: g:limner_command (list or string, default ['limner']; b:limner_command
" overrides it per buffer), g:limner_env (dict of extra environment variables,
" e.g. {'LIMNER_PROFILE': 'fast'}), g:limner_infill_profile (a profile such as
" 'fim:qwen' that limner loads just above the hole, so a FIM template applies
" without a !profile line in your source), g:limner_no_mappings (skip the maps).
" Hook: `autocmd User LimnerDone ...` runs after a request ends; then
" b:limner_exit holds the exit status and b:limner_stopped says whether
" :LimnerStop ended it (limner exits 143 on SIGTERM).
" Needs Vim 8.1+ with +job and +channel (Vim 9 is fine); not Neovim.

if exists('g:loaded_limner')
  finish
endif
if !has('job') || !has('channel') || !exists('*appendbufline')
  echohl WarningMsg
  echomsg 'limner.vim needs Vim 8.1+ with +job and +channel'
  echohl None
  finish
endif
let g:loaded_limner = 1
let s:save_cpo = &cpo
set cpo&vim

" bufnr -> state of the one request running (or just ended) in that buffer.
let s:jobs = {}
let s:next_id = 1
" A zero-width text property marks the insertion line, so edits above it
" (the user keeps typing while the reply streams) do not misplace output.
let s:has_props = has('textprop')
if s:has_props && empty(prop_type_get('limner_insert'))
  call prop_type_add('limner_insert', {})
endif

function! s:Command() abort
  let cmd = get(b:, 'limner_command', get(g:, 'limner_command', ['limner']))
  return type(cmd) == v:t_list ? copy(cmd) : cmd
endfunction

" --- the insertion point ----------------------------------------------------

function! s:Mark(st, lnum) abort
  let a:st.lnum = a:lnum
  if s:has_props
    call prop_remove({'type': 'limner_insert', 'id': a:st.id, 'bufnr': a:st.buf, 'all': 1})
    call prop_add(a:lnum, 1, {'type': 'limner_insert', 'id': a:st.id, 'bufnr': a:st.buf, 'length': 0})
  endif
endfunction

function! s:Where(st) abort
  if s:has_props
    let found = prop_find({'type': 'limner_insert', 'id': a:st.id, 'bufnr': a:st.buf,
          \ 'lnum': 1, 'col': 1}, 'f')
    if !empty(found)
      return found.lnum
    endif
  endif
  " The marked line was deleted: fall back to where it last was.
  return min([a:st.lnum, len(getbufline(a:st.buf, 1, '$'))])
endfunction

function! s:Unmark(st) abort
  if s:has_props && bufloaded(a:st.buf)
    call prop_remove({'type': 'limner_insert', 'id': a:st.id, 'bufnr': a:st.buf, 'all': 1})
  endif
endfunction

" --- text in, text out -------------------------------------------------------

" Bytes at the end of s that start a UTF-8 sequence not yet complete.
function! s:Utf8Tail(s) abort
  let n = len(a:s)
  for back in range(1, min([3, n]))
    let b = char2nr(strpart(a:s, n - back, 1))
    if b >= 0xC0
      let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
      return need > back ? strpart(a:s, n - back) : ''
    elseif b < 0x80
      return ''
    endif
  endfor
  return ''
endfunction

" limner speaks UTF-8. Vim keeps raw bytes in lines, so with 'encoding' utf-8
" a sequence split across two chunks rejoins by itself; otherwise convert
" whole sequences only.
function! s:Decode(st, msg) abort
  if &encoding ==# 'utf-8'
    return a:msg
  endif
  let raw = a:st.pending . a:msg
  let a:st.pending = s:Utf8Tail(raw)
  let raw = strpart(raw, 0, len(raw) - len(a:st.pending))
  let text = iconv(raw, 'utf-8', &encoding)
  return empty(text) && !empty(raw) ? raw : text
endfunction

function! s:Write(st, text) abort
  if empty(a:text)
    return
  endif
  let a:st.last = a:text[-1:]
  let a:st.any = 1
  let parts = split(a:text, "\n", 1)
  let lnum = s:Where(a:st)
  let line = get(getbufline(a:st.buf, lnum), 0, '')
  call setbufline(a:st.buf, lnum, line . parts[0])
  if len(parts) > 1
    call appendbufline(a:st.buf, lnum, parts[1:])
  endif
  call s:Mark(a:st, lnum + len(parts) - 1)
endfunction

" --- job callbacks: each is bound to one request and ignores it once stale --

function! s:Current(buf, id) abort
  let st = get(s:jobs, a:buf, {})
  return !empty(st) && st.id == a:id && !st.stopped ? st : {}
endfunction

function! s:OnOut(buf, id, channel, msg) abort
  let st = s:Current(a:buf, a:id)
  if empty(st)
    return
  endif
  if !bufloaded(a:buf)
    call s:Stop(a:buf, 0)
    return
  endif
  call s:Write(st, s:Decode(st, a:msg))
endfunction

function! s:OnErr(buf, id, channel, msg) abort
  let st = get(s:jobs, a:buf, {})
  if !empty(st) && st.id == a:id
    let st.err = strpart(st.err . a:msg, max([0, len(st.err) + len(a:msg) - 2000]))
  endif
endfunction

" Output may still be buffered when the process exits, so a request is
" finished only once both the exit status and the channel close are in.
function! s:OnExit(buf, id, job, status) abort
  let st = get(s:jobs, a:buf, {})
  if !empty(st) && st.id == a:id
    let st.status = a:status
    let st.exited = 1
    call s:MaybeDone(st)
  endif
endfunction

function! s:OnClose(buf, id, channel) abort
  let st = get(s:jobs, a:buf, {})
  if !empty(st) && st.id == a:id
    let st.closed = 1
    call s:MaybeDone(st)
  endif
endfunction

function! s:MaybeDone(st) abort
  if a:st.done || !a:st.closed || !a:st.exited
    return
  endif
  let a:st.done = 1
  if !a:st.stopped && bufloaded(a:st.buf)
    if !empty(a:st.pending)
      call s:Write(a:st, a:st.pending)
    endif
    if a:st.kind ==# 'infill'
      call s:TrimHole(a:st)
    endif
  endif
  call s:Unmark(a:st)
  if a:st.stopped
    " s:Stop already said so.
  elseif a:st.status != 0
    let why = matchstr(a:st.err, '[^\n]\+\ze\n*$')
    echohl WarningMsg
    echomsg printf('limner: exited with status %d%s', a:st.status,
          \ empty(why) ? ' (see the !error block)' : ': ' . why[:120])
    echohl None
  endif
  call setbufvar(a:st.buf, 'limner_exit', a:st.status)
  call setbufvar(a:st.buf, 'limner_stopped', a:st.stopped)
  if exists('#User#LimnerDone')
    " Run the hook with the request's buffer current, if it is on screen.
    let win = bufwinid(a:st.buf)
    if win != -1 && win != win_getid() && exists('*win_execute')
      call win_execute(win, 'doautocmd <nomodeline> User LimnerDone')
    else
      doautocmd <nomodeline> User LimnerDone
    endif
  endif
endfunction

" The hole is a line of its own. A reply ending in a newline (or no reply
" at all in a hole we opened) would leave an empty line behind: drop it.
function! s:TrimHole(st) abort
  let lnum = s:Where(a:st)
  if get(getbufline(a:st.buf, lnum), 0, 'x') !=# ''
    return
  endif
  if (a:st.any && a:st.last ==# "\n") || (!a:st.any && a:st.created)
    if len(getbufline(a:st.buf, 1, '$')) > 1
      call deletebufline(a:st.buf, lnum)
    endif
  endif
endfunction

" --- starting and stopping ------------------------------------------------

function! s:Stop(buf, verbose) abort
  let st = get(s:jobs, a:buf, {})
  if empty(st) || st.done || st.stopped
    if a:verbose
      echo 'limner: nothing running in this buffer'
    endif
    return
  endif
  " From here on the buffer stays as it is; whatever limner prints while
  " shutting down is ignored.
  let st.stopped = 1
  call job_stop(st.job, 'term')
  call s:Unmark(st)
  if a:verbose
    echo 'limner: stopped'
  endif
endfunction

function! s:Start(kind, text, lnum, created) abort
  let buf = bufnr('%')
  call s:Stop(buf, 0)
  let id = s:next_id
  let s:next_id += 1
  let st = {'id': id, 'buf': buf, 'kind': a:kind, 'lnum': a:lnum, 'created': a:created,
        \ 'stopped': 0, 'done': 0, 'closed': 0, 'exited': 0, 'status': 0, 'last': '', 'any': 0,
        \ 'err': '', 'pending': '', 'job': v:null}
  let s:jobs[buf] = st
  call s:Mark(st, a:lnum)
  let opts = {
        \ 'in_io': 'pipe', 'out_mode': 'raw', 'err_mode': 'raw',
        \ 'out_cb': function('s:OnOut', [buf, id]),
        \ 'err_cb': function('s:OnErr', [buf, id]),
        \ 'exit_cb': function('s:OnExit', [buf, id]),
        \ 'close_cb': function('s:OnClose', [buf, id]),
        \ 'stoponexit': 'term'}
  let env = copy(get(g:, 'limner_env', {}))
  " Infill retrieval (!retrieve) must know which file the cursor is in.
  if a:kind ==# 'infill' && !empty(expand('%:p'))
    let env.LIMNER_FILE = expand('%:p')
  endif
  if !empty(env)
    let opts.env = env
  endif
  let cmd = s:Command()
  let program = type(cmd) == v:t_list ? get(cmd, 0, '') : matchstr(cmd, '^\s*\zs\S\+')
  if !executable(program)
    return s:NotStarted(st, 'command not found: ' . program)
  endif
  let st.job = job_start(cmd, opts)
  if job_status(st.job) ==# 'fail'
    return s:NotStarted(st, 'could not start ' . string(cmd))
  endif
  let text = &encoding ==# 'utf-8' ? a:text : iconv(a:text, &encoding, 'utf-8')
  let ch = job_getchannel(st.job)
  try
    call ch_sendraw(ch, text)
    call ch_close_in(ch)
  catch /^Vim\%((\a\+)\)\=:E/
    " The process died before reading; its exit callback reports why.
  endtry
endfunction

function! s:NotStarted(st, why) abort
  let a:st.done = 1
  call s:Unmark(a:st)
  if a:st.created
    call deletebufline(a:st.buf, a:st.lnum)
  endif
  echohl ErrorMsg
  echomsg 'limner: ' . a:why . ' (set g:limner_command)'
  echohl None
endfunction

function! s:BufferText(lines) abort
  return join(a:lines, "\n") . "\n"
endfunction

function! LimnerChat() abort
  let lines = getline(1, '$')
  call s:Start('chat', s:BufferText(lines), line('$'), 0)
endfunction

" The hole is the cursor line when it is blank, else a new line below it.
" limner sees `!infill` there; the buffer never holds that line.
function! LimnerInfill() abort
  let lnum = line('.')
  let lines = getline(1, '$')
  let before = lnum > 1 ? lines[: lnum - 2] : []
  " A FIM template only counts if it is loaded before the hole (as in Illume,
  " the default profile comes too late), hence the profile line right here.
  let profile = get(b:, 'limner_infill_profile', get(g:, 'limner_infill_profile', ''))
  let hole = (empty(profile) ? [] : ['!profile ' . profile]) + ['!infill']
  if getline(lnum) =~# '^\s*$'
    let sent = before + hole + lines[lnum :]
    call setline(lnum, '')
    let created = 0
  else
    let sent = before + [lines[lnum - 1]] + hole + lines[lnum :]
    call append(lnum, '')
    let lnum += 1
    let created = 1
  endif
  call s:Start('infill', s:BufferText(sent), lnum, created)
endfunction

function! LimnerStop() abort
  call s:Stop(bufnr('%'), 1)
endfunction

" 'none', 'run' or 'dead', plus the process id, for statuslines and tests.
function! LimnerStatus(...) abort
  let st = get(s:jobs, a:0 ? a:1 : bufnr('%'), {})
  if empty(st) || st.job is v:null
    return {'status': 'none', 'pid': 0}
  endif
  let info = job_info(st.job)
  return {'status': info.status, 'pid': get(info, 'process', 0), 'stopped': st.stopped}
endfunction

augroup limner
  autocmd!
  autocmd BufUnload * call s:Stop(str2nr(expand('<abuf>')), 0)
augroup END

command! -bar Limner call LimnerChat()
command! -bar LimnerInfill call LimnerInfill()
command! -bar LimnerStop call LimnerStop()

nnoremap <silent> <Plug>(limner-chat) :<C-U>call LimnerChat()<CR>
nnoremap <silent> <Plug>(limner-infill) :<C-U>call LimnerInfill()<CR>
nnoremap <silent> <Plug>(limner-stop) :<C-U>call LimnerStop()<CR>

" Default keys, unless turned off or the keys are already taken.
if !get(g:, 'limner_no_mappings', 0)
  for [s:key, s:plug] in [['a', 'chat'], ['f', 'infill'], ['s', 'stop']]
    if empty(maparg('<Leader>' . s:key, 'n')) && !hasmapto('<Plug>(limner-' . s:plug . ')', 'n')
      execute 'nmap <Leader>' . s:key . ' <Plug>(limner-' . s:plug . ')'
    endif
  endfor
  unlet s:key s:plug
endif

let &cpo = s:save_cpo
unlet s:save_cpo
