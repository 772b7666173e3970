// A modal dialog on the native <dialog> element: showModal() moves focus in and makes the
// page behind it inert, Esc closes it, Tab cycles inside it, and focus returns to the
// element that opened it.

import type { ComponentChildren } from "preact";
import { useEffect, useId, useLayoutEffect, useRef } from "preact/hooks";

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

export interface DialogProps {
  open: boolean;
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  /** Buttons at the bottom. */
  footer?: ComponentChildren;
  wide?: boolean;
  /** A name for tests and styles: data-dialog="...". */
  name?: string;
}

export function Dialog({ open, title, onClose, children, footer, wide, name }: DialogProps) {
  const ref = useRef<HTMLDialogElement>(null);
  const opener = useRef<HTMLElement | null>(null);
  const closeRef = useRef(onClose);
  closeRef.current = onClose;
  const titleId = useId();

  useLayoutEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) {
      opener.current = document.activeElement instanceof HTMLElement ? document.activeElement : null;
      dialog.showModal();
    } else if (!open && dialog.open) {
      dialog.close();
    }
  }, [open]);

  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    const closed = () => {
      closeRef.current();
      const back = opener.current;
      opener.current = null;
      if (back && back.isConnected) back.focus();
    };
    const trap = (event: KeyboardEvent) => {
      if (event.key !== "Tab") return;
      const items = Array.from(dialog.querySelectorAll<HTMLElement>(FOCUSABLE)).filter((e) => e.offsetParent !== null);
      const first = items[0];
      const last = items[items.length - 1];
      if (!first || !last) return;
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    };
    dialog.addEventListener("close", closed);
    dialog.addEventListener("keydown", trap);
    return () => {
      dialog.removeEventListener("close", closed);
      dialog.removeEventListener("keydown", trap);
    };
  }, []);

  return (
    <dialog ref={ref} class={wide ? "dialog dialog-wide" : "dialog"} aria-labelledby={titleId} data-dialog={name}>
      {open && (
        <div class="dialog-body">
          <header class="dialog-header">
            <h2 id={titleId}>{title}</h2>
            <button type="button" class="icon-button" aria-label="Close" onClick={() => ref.current?.close()}>
              ×
            </button>
          </header>
          <div class="dialog-content">{children}</div>
          {footer && <footer class="dialog-footer">{footer}</footer>}
        </div>
      )}
    </dialog>
  );
}

export interface ConfirmProps {
  open: boolean;
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  danger?: boolean;
  busy?: boolean;
  error?: string | null;
  onConfirm: () => void;
  onClose: () => void;
  name?: string;
}

/** A yes / no question before anything that moves money or cannot be undone. */
export function ConfirmDialog(props: ConfirmProps) {
  return (
    <Dialog
      open={props.open}
      title={props.title}
      onClose={props.onClose}
      name={props.name}
      footer={
        <>
          <button type="button" class="button" onClick={props.onClose} disabled={props.busy}>
            Cancel
          </button>
          <button
            type="button"
            class={props.danger ? "button button-danger" : "button button-primary"}
            onClick={props.onConfirm}
            disabled={props.busy}
            data-confirm
          >
            {props.busy ? "Working…" : props.confirmLabel}
          </button>
        </>
      }
    >
      {props.children}
      {props.error && (
        <p class="form-error" role="alert">
          {props.error}
        </p>
      )}
    </Dialog>
  );
}
