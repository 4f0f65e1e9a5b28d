;;; limner.el --- Stream a model's reply into the buffer you are editing  -*- lexical-binding: t -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "27.1"))
;; Keywords: tools, convenience

;;; Commentary:

;; The buffer goes to `limner' on stdin; its output is inserted as it
;; arrives, at a marker that moves with your edits, so you can keep
;; working while it streams.  One request per buffer.
;;
;;   M-x limner         chat / complete: the reply goes at the end
;;   M-x limner-infill  fill in code at the point's line
;;   M-x limner-stop    stop this buffer's request now
;;
;; Customize `limner-command' and `limner-environment'.  No keys are bound;
;; see docs/editors.md for suggestions.

;;; Code:

(defgroup limner nil
  "Stream replies from the limner command into buffers."
  :group 'tools
  :prefix "limner-")

(defcustom limner-command '("limner")
  "The limner command: a list of program and arguments, or one string.
A string is split into words the way a shell would, quotes included."
  :type '(choice (repeat string) string))

(defcustom limner-environment nil
  "Extra environment for limner, as \"VAR=VALUE\" strings.
For example \\='(\"LIMNER_PROFILE=fast\")."
  :type '(repeat string))

(defcustom limner-infill-profile nil
  "A profile limner loads just above the infill hole, e.g. \"fim:qwen\".
A FIM template counts only when it is loaded before the hole (as in
Illume, the default profile comes too late), so this is how a template
applies without a !profile line in your source.  Nil: none."
  :type '(choice (const nil) string))

(defvar limner-finished-hook nil
  "Run in the request's buffer when a request ends.
`limner-last-exit' then holds its exit status and `limner-last-stopped'
says whether `limner-stop' ended it (limner exits 143 on SIGTERM).")

(defvar-local limner--process nil
  "The limner process streaming into this buffer, if any.")

(defvar-local limner-last-exit nil
  "Exit status of this buffer's last limner request.")

(defvar-local limner-last-stopped nil
  "Non-nil when `limner-stop' ended this buffer's last request.")

(defun limner--command ()
  (cond ((not (stringp limner-command)) limner-command)
        ((fboundp 'split-string-shell-command) ; Emacs 28+: 'single' quotes too
         (split-string-shell-command limner-command))
        (t (split-string-and-unquote limner-command))))

(defun limner--stop-quietly ()
  "Stop this buffer's request, if any; the buffer keeps what arrived."
  (let ((proc limner--process))
    (setq limner--process nil)
    (when (and proc (not (process-get proc 'limner-stopped)))
      ;; Mark first: whatever limner prints while shutting down is ignored.
      (process-put proc 'limner-stopped t)
      (when (process-live-p proc)
        ;; TERM, not `kill-process' (KILL): limner ends its log entry cleanly.
        (signal-process proc 'SIGTERM))
      t)))

(defun limner--filter (proc string)
  (let ((buf (process-get proc 'limner-buffer))
        (marker (process-get proc 'limner-marker)))
    (when (and (not (process-get proc 'limner-stopped))
               (buffer-live-p buf)
               (> (length string) 0))
      (with-current-buffer buf
        (save-excursion
          ;; The marker advances past the text (insertion type t); point,
          ;; if it sits at the marker, stays where the user left it.
          (goto-char marker)
          (insert string))
        (process-put proc 'limner-any t)
        (process-put proc 'limner-last (aref string (1- (length string))))))))

(defun limner--trim-hole (proc marker)
  "Drop the empty line an infill leaves behind.
The hole is a line of its own, so a reply ending in a newline (or no
reply in a hole we opened) would leave one empty line after it."
  (let ((any (process-get proc 'limner-any)))
    (when (or (and any (eq (process-get proc 'limner-last) ?\n))
              (and (not any) (process-get proc 'limner-created)))
      (save-excursion
        (cond ((eq (char-after marker) ?\n)
               (delete-region marker (1+ marker)))
              ((and (not any) (eq (char-before marker) ?\n))
               (delete-region (1- marker) marker)))))))

(defun limner--stderr-tail (proc)
  (let ((errbuf (process-get proc 'limner-stderr)))
    (when (buffer-live-p errbuf)
      (with-current-buffer errbuf
        (let ((text (string-trim (buffer-string))))
          (car (last (split-string text "\n" t))))))))

(defun limner--sentinel (proc _event)
  ;; Emacs reads all pending output before it runs the sentinel for an exit.
  (unless (process-live-p proc)
    (let* ((buf (process-get proc 'limner-buffer))
           (marker (process-get proc 'limner-marker))
           (stopped (process-get proc 'limner-stopped))
           (status (process-exit-status proc))
           (why (limner--stderr-tail proc)))
      ;; A request replaced by a newer one in the same buffer ends silently.
      (when (and (buffer-live-p buf)
                 (with-current-buffer buf
                   (or (null limner--process) (eq limner--process proc))))
        (with-current-buffer buf
          (when (and (not stopped) (eq (process-get proc 'limner-kind) 'infill))
            (limner--trim-hole proc marker))
          (setq limner--process nil)
          (setq limner-last-exit status
                limner-last-stopped stopped)
          (cond (stopped nil)            ; `limner-stop' already said so
                ((/= status 0)
                 (message "limner: exited with status %d%s" status
                          (if why (concat ": " (truncate-string-to-width why 120))
                            " (see the !error block)"))))
          (run-hooks 'limner-finished-hook)))
      (set-marker marker nil)
      (let ((errbuf (process-get proc 'limner-stderr)))
        (when (buffer-live-p errbuf)
          (kill-buffer errbuf))))))

(defun limner--start (kind text position created)
  "Send TEXT to limner; insert its output at POSITION in this buffer.
KIND is `chat' or `infill'; CREATED says the infill hole line is ours."
  (limner--stop-quietly)
  (let ((program (car (limner--command))))
    (unless (and program (executable-find program))
      (user-error "limner: command not found: %s (customize `limner-command')" program)))
  (let* ((marker (copy-marker position t))
         (errbuf (generate-new-buffer " *limner stderr*"))
         (process-environment
          (append limner-environment
                  ;; Infill retrieval (!retrieve) must know which file point is in.
                  (when (and (eq kind 'infill) buffer-file-name)
                    (list (concat "LIMNER_FILE=" buffer-file-name)))
                  process-environment))
         (proc (make-process
                :name "limner"
                :buffer nil
                :command (limner--command)
                :connection-type 'pipe
                ;; Decoding state is kept per process, so a UTF-8 sequence
                ;; split across two chunks still comes out whole.
                :coding 'utf-8-unix
                :noquery t
                :stderr errbuf
                :filter #'limner--filter
                :sentinel #'limner--sentinel)))
    (process-put proc 'limner-buffer (current-buffer))
    (process-put proc 'limner-marker marker)
    (process-put proc 'limner-kind kind)
    (process-put proc 'limner-created created)
    (process-put proc 'limner-stderr errbuf)
    ;; The stderr pipe gets a sentinel of its own; keep it quiet.
    (let ((errproc (get-buffer-process errbuf)))
      (when errproc
        (set-process-query-on-exit-flag errproc nil)
        (set-process-sentinel errproc #'ignore)))
    (setq limner--process proc
          limner-last-exit nil
          limner-last-stopped nil)
    (add-hook 'kill-buffer-hook #'limner--stop-quietly nil t)
    ;; A process that dies before reading is reported by the sentinel.
    (ignore-errors
      (process-send-string proc text)
      (process-send-eof proc))
    proc))

;;;###autoload
(defun limner ()
  "Send the buffer to limner and append the streamed reply at its end.
The reply goes before the buffer's final newline, if it has one."
  (interactive)
  (let ((end (if (eq (char-before (point-max)) ?\n)
                 (1- (point-max))
               (point-max))))
    (limner--start 'chat
                   (buffer-substring-no-properties (point-min) (point-max))
                   end nil)))

;;;###autoload
(defun limner-infill ()
  "Fill in code at point's line: limner sees an `!infill' line there.
The hole is the current line when it is blank, else a new line below
it.  The `!infill' line is only in what limner reads, never in the buffer."
  (interactive)
  (let (hole created)
    (if (save-excursion (beginning-of-line) (looking-at-p "[ \t]*$"))
        (progn
          (delete-region (line-beginning-position) (line-end-position))
          (setq hole (line-beginning-position)))
      (save-excursion
        (end-of-line)
        (insert "\n")
        (setq hole (point) created t)))
    (condition-case err
        (limner--start 'infill
                       (concat (buffer-substring-no-properties (point-min) hole)
                               (if limner-infill-profile
                                   (concat "!profile " limner-infill-profile "\n")
                                 "")
                               "!infill"
                               (buffer-substring-no-properties hole (point-max)))
                       hole created)
      (error
       (when created                    ; take back the line we opened
         (delete-region (1- hole) hole))
       (signal (car err) (cdr err))))))

;;;###autoload
(defun limner-stop ()
  "Stop the limner request in this buffer; what already arrived stays."
  (interactive)
  (if (limner--stop-quietly)
      (message "limner: stopped")
    (message "limner: nothing running in this buffer")))

(defun limner-running-p ()
  "Non-nil when a limner request is streaming into this buffer."
  (and limner--process (process-live-p limner--process)))

(provide 'limner)

;;; limner.el ends here
