/*
 * SPIN model of the daxlease lease/recall protocol: the rules of
 * docs/lease-protocol.md as implemented by lib/lease (lease.h).
 *
 * Parties: one operator (owns the lease records and the volume phase), one
 * owner agent (opens and fences the holders' memory windows), three holders
 * (client library + node agent as one party). Every message may be delayed
 * arbitrarily and overtaken by any message of another kind or from another
 * sender: every receive names the kind and sender it takes (`??` on
 * constants) and any branch whose message is queued may run; sends are
 * sorted (`!!`) so a channel's contents are canonical. Messages of one kind
 * from one sender stay in sending order (by epoch). Holder 2 may crash at any
 * point (its node is gone: it never answers again and its window stays open
 * until fenced). Time is abstract: a recall deadline may fire at any moment
 * (so progress reports, which only move a deadline, are not modelled).
 *
 * Properties (assertions, checked in every reachable state):
 *   (a) no holder reaches memory under an epoch after that epoch was fenced
 *       for it (write/flush success => fenced_ep < epoch of the access)
 *   (b) the volume only starts a reshape/migration when no lease is Granted
 *       or Recalling (every recalled lease is Released or Revoked, and
 *       Revoked only after the owner confirmed the fence) and no holder can
 *       physically reach the memory (no mapping through an open window)
 *   (c) no grant while a recall is in progress (a grant happens only in
 *       Ready, when no lease is Recalling)
 *   (d) epochs only grow: the volume epoch is only incremented; a holder
 *       only accepts a grant for an epoch newer than any it has seen; the
 *       owner's fence marks only grow
 *   (f) an acknowledged write is never lost: a write or flush never lands
 *       while the volume is Quiesced or being changed (the copy/switch would
 *       lose it); the application's write ack comes only from a successful
 *       flush; a recall ack saying "flushed" is sent only with no unflushed
 *       data; a write or flush through a fenced window fails visibly.
 * and as LTL (liveness, with weak fairness):
 *   (e) recall_completes: [] (Recalling -> <> Quiesced)
 *
 * What the operator stores (docs/operator.md, "What is durable"): the
 * recall's start, each decided revoke and each confirmed fence, and the
 * outcome (Complete) with the volume's epoch are on the DaxRecall/DaxVolume
 * before anything is sent that depends on them; an ack taken mid-recall and
 * a revocation ack are soft state (the lease objects that show them lag).
 * With -DCRASHES=n the operator may crash n times at any point between steps: it
 * loses the soft state (a taken ack: the lease is Recalling again; a taken
 * revocation ack: Revoked again) and a new leader re-sends, from what is
 * stored, every recall, fence request and revocation still outstanding;
 * holders and the owner answer from their current state.
 *
 * Build flags:
 *   -DBROKEN_EARLY_COMPLETE  the operator marks a lease Revoked as soon as
 *        its deadline fires, without waiting for the owner's fence, so the
 *        recall can complete before the fence is confirmed. SPIN must find a
 *        violation of (b)/(f).
 *   -DRECALLS=<n> recalls per run (default 1), -DREQS=<n> re-requests by
 *   holder 1 after its first request (default 1), -DCRASHES=<n> operator
 *   crashes per run (default 0; the `crash` check runs 1), -DNH=<2|3>
 *   holders (default 3, 2 with CRASHES: holder NH-1 is the one that may
 *   crash).
 */

#ifndef RECALLS
#define RECALLS 1
#endif
#ifndef CRASHES
#define CRASHES 0
#endif
#ifndef REQS
#define REQS 1
#endif

/* Holders. The crash check runs two (-DCRASHES=1 sets NH 2 unless given):
   holder 0 may release, holder NH-1 may crash; see check.sh. */
#ifndef NH
#if CRASHES > 0
#define NH 2
#else
#define NH 3
#endif
#endif
#if NH != 2 && NH != 3
#error "NH must be 2 or 3"
#endif

mtype = {
  REQ, ACK, REL, REVACK,      /* holder -> operator */
  FENCED,                     /* owner -> operator */
  GRANTED, RECALL, REVOKED,   /* operator -> holder */
  FENCE                       /* operator -> owner */
};

/* Lease states (lib/lease LeaseState) plus NONE = no record yet. */
#define NONE      0
#define PENDING   1
#define GRANTED_S 2
#define RECALLING 3
#define RELEASED  4
#define REVOKED_S 5

/* Volume phases (lib/lease VolumePhase; Reshaping/Migrating = CHANGING). */
#define READY     0
#define VRECALL   1
#define QUIESCED  2
#define CHANGING  3

/* ---- operator: the DaxVolume and DaxLease records */
byte phase = READY;
byte epoch = 1;
byte rid = 0;                 /* ID of the running (or last) recall */
byte recalls = 0;
byte lstate[NH];
byte lepoch[NH];
byte lrecall[NH];
bool fencing[NH];             /* revoke decided, fence not yet confirmed */
#if CRASHES > 0
/* Soft state: taken by the running leader, not stored yet. */
bool soft_ack[NH];            /* Released by an ack during the recall */
bool soft_revack[NH];         /* Released by a revocation ack */
byte crashes = 0;
#define SOFT(v, i, x) v[i] = x
#else
#define SOFT(v, i, x) skip
#endif

/* ---- owner agent */
byte window[NH];              /* epoch of the holder's open window, 0 = none */
byte fenced_ep[NH];           /* highest epoch fenced for the holder (sticky) */

/* ---- holders (global so the checks can see them) */
byte hep[NH];                 /* epoch of the grant the holder uses, 0 = none */
bool mapped[NH];              /* the holder has a mapping through a window */

/* Temporaries, live only inside one atomic step and hidden from the state
   vector. A send first asserts the channel has room, so no atomic step ever
   blocks halfway (which would let another process see the temporaries). */
hidden byte op_h, op_e, op_r, op_i, op_f;
hidden mtype op_m;
hidden byte ow_h, ow_e, ow_r, ow_f;
hidden mtype ow_m;
hidden byte ho_h, ho_e, ho_r, ho_f, ho_flushed;
hidden mtype ho_m;

#define SEND(ch, a, b, c, d, x) assert(nfull(ch)); ch !! a, b, c, d, x

/* Messages: kind, holder, epoch, recall ID, flag (ACK: flushed). */
#if CRASHES > 0
/* Room for one re-send of everything outstanding (an operator crash). */
chan toop = [16] of { mtype, byte, byte, byte, byte };
chan toown = [2 * NH] of { mtype, byte, byte, byte, byte };
chan toh[NH] = [6] of { mtype, byte, byte, byte, byte };
#else
chan toop = [12] of { mtype, byte, byte, byte, byte };
chan toown = [NH] of { mtype, byte, byte, byte, byte };
chan toh[NH] = [4] of { mtype, byte, byte, byte, byte };
#endif

#define HOLDS(i) (lstate[i] == GRANTED_S || lstate[i] == RECALLING)
/* Recalling and no revoke decided yet: an ack or release is still taken. */
#define RECALL_OPEN(i) (lstate[i] == RECALLING && !fencing[i])
#if NH == 3
#define NOACCESS (!HOLDS(0) && !HOLDS(1) && !HOLDS(2))
#define ANY_PENDING \
  (lstate[0] == PENDING || lstate[1] == PENDING || lstate[2] == PENDING)
#define NONE_RECALLING \
  (lstate[0] != RECALLING && lstate[1] != RECALLING && lstate[2] != RECALLING)
#define ANY_OPEN (RECALL_OPEN(0) || RECALL_OPEN(1) || RECALL_OPEN(2))
#define TOH_ROOM (nfull(toh[0]) && nfull(toh[1]) && nfull(toh[2]))
#define FENCING (fencing[0] + fencing[1] + fencing[2])
#else
#define NOACCESS (!HOLDS(0) && !HOLDS(1))
#define ANY_PENDING (lstate[0] == PENDING || lstate[1] == PENDING)
#define NONE_RECALLING (lstate[0] != RECALLING && lstate[1] != RECALLING)
#define ANY_OPEN (RECALL_OPEN(0) || RECALL_OPEN(1))
#define TOH_ROOM (nfull(toh[0]) && nfull(toh[1]))
#define FENCING (fencing[0] + fencing[1])
#endif
#define REACHES(i) (mapped[i] && hep[i] != 0 && window[i] == hep[i])

/* lib/lease RecallComplete(): no lease holds access -> Quiesced. */
inline maybe_complete() {
  if
  :: phase == VRECALL && NOACCESS ->
     /* the outcome is stored with Complete: taken acks are durable now */
     phase = QUIESCED;
     SOFT(soft_ack, 0, false); SOFT(soft_ack, 1, false);
#if NH > 2
     SOFT(soft_ack, 2, false)
#endif
  :: else -> skip
  fi
}

/* A holder's access through the owner's window succeeded: check (a), (f). */
inline access_ok(me) {
  assert(fenced_ep[me] < hep[me]);                  /* (a) */
  assert(phase != QUIESCED && phase != CHANGING)    /* (f) */
}

/* The operator handles one message (lib/lease Apply). */
inline op_receive() {
  if
  :: op_m == REQ ->
     if
     :: lstate[op_h] == NONE || lstate[op_h] == RELEASED ->
        /* the request is the holder's own write: durable */
        lstate[op_h] = PENDING; SOFT(soft_ack, op_h, false);
        SOFT(soft_revack, op_h, false)
     :: else -> skip                       /* refused */
     fi
  :: op_m == ACK ->
     if
     :: RECALL_OPEN(op_h) && op_e == lepoch[op_h] &&
        op_r == lrecall[op_h] && op_r == rid ->
        if
        :: op_f -> lstate[op_h] = RELEASED; SOFT(soft_ack, op_h, true)
        :: else -> fencing[op_h] = true;   /* not flushed: revoke */
           SEND(toown, FENCE, op_h, op_e, 0, 0)
        fi
     :: else -> skip                       /* stale or too late */
     fi
  :: op_m == REL ->
     if
     :: (lstate[op_h] == GRANTED_S || RECALL_OPEN(op_h)) &&
        op_e == lepoch[op_h] -> lstate[op_h] = RELEASED
     :: else -> skip
     fi
  :: op_m == FENCED ->
     if
     :: lstate[op_h] == RECALLING && fencing[op_h] &&
        op_e == lepoch[op_h] ->
        lstate[op_h] = REVOKED_S; fencing[op_h] = false;
        SEND(toh[op_h], REVOKED, op_h, op_e, 0, 0)
     :: else -> skip                       /* duplicate */
     fi
  :: op_m == REVACK ->
     if
     :: lstate[op_h] == REVOKED_S && op_e == lepoch[op_h] ->
        lstate[op_h] = RELEASED; SOFT(soft_revack, op_h, true)
     :: else -> skip
     fi
  fi;
  maybe_complete()
}

#define OPRECV(M, H) \
  :: atomic { toop ?? M, H, op_e, op_r, op_f -> op_m = M; op_h = H; op_receive() }

active proctype Operator() {
end:
  do
  /* ---- grant a pending request: only while Ready (c) */
  :: atomic {
       phase == READY && ANY_PENDING ->
       if
       :: lstate[0] == PENDING -> op_h = 0
       :: lstate[1] == PENDING -> op_h = 1
#if NH > 2
       :: lstate[2] == PENDING -> op_h = 2
#endif
       fi;
       assert(NONE_RECALLING);                                   /* (c) */
       lstate[op_h] = GRANTED_S; lepoch[op_h] = epoch;
       SEND(toh[op_h], GRANTED, op_h, epoch, 0, 0)
     }
  /* ---- start a recall: every Granted lease -> Recalling (one ID). One
          atomic step: what the operator stores first is the recall's start
          (the DaxRecall Recalling with its deadline, lib/lease
          WhenToCarryOut: kRecallStart), and by that record every lease that
          holds access at the epoch is Recalling (a lease object still
          Granted is read through it), so the holders are asked right after
          it; the volume's and the leases' own writes come later and show
          nothing a reader of the record would not already see. */
  :: atomic {
       phase == READY && recalls < RECALLS ->
       recalls++; rid++; phase = VRECALL;
       op_i = 0;
       do
       :: op_i < NH ->
          if
          :: lstate[op_i] == GRANTED_S ->
             lstate[op_i] = RECALLING; lrecall[op_i] = rid;
             SEND(toh[op_i], RECALL, op_i, epoch, rid, 0)
          :: else -> skip
          fi;
          op_i++
       :: else -> break
       od;
       maybe_complete()
     }
  /* ---- a lease's deadline passes without an ack: decide the revoke and
          ask the owner to fence (Step) */
  :: atomic {
       phase == VRECALL && ANY_OPEN ->
       if
       :: RECALL_OPEN(0) -> op_h = 0
       :: RECALL_OPEN(1) -> op_h = 1
#if NH > 2
       :: RECALL_OPEN(2) -> op_h = 2
#endif
       fi;
       fencing[op_h] = true;
       SEND(toown, FENCE, op_h, lepoch[op_h], 0, 0);
#ifdef BROKEN_EARLY_COMPLETE
       lstate[op_h] = REVOKED_S; fencing[op_h] = false;
       SEND(toh[op_h], REVOKED, op_h, lepoch[op_h], 0, 0);
       maybe_complete()
#endif
     }
  /* ---- a message from a holder or the owner (Apply): any kind from any
          sender may be taken next */
  OPRECV(REQ, 0) OPRECV(REQ, 1)
  OPRECV(ACK, 0) OPRECV(ACK, 1)
  OPRECV(REL, 0) OPRECV(REL, 1)
  OPRECV(REVACK, 0) OPRECV(REVACK, 1)
  OPRECV(FENCED, 0) OPRECV(FENCED, 1)
#if NH > 2
  OPRECV(REQ, 2) OPRECV(ACK, 2) OPRECV(REL, 2) OPRECV(REVACK, 2)
  OPRECV(FENCED, 2)
#endif
#if CRASHES > 0
  /* ---- the leader crashes; its successor rebuilds from what is stored
          (the DaxRecall's record, the volume, the lease objects read
          through the record) and re-sends what is outstanding */
  :: atomic {
       crashes < CRASHES && len(toown) + FENCING <= NH && TOH_ROOM ->
       crashes++;
       op_i = 0;
       do
       :: op_i < NH ->
          if
          :: soft_ack[op_i] && lstate[op_i] == RELEASED ->
             lstate[op_i] = RECALLING        /* the record says recalled */
          :: soft_revack[op_i] && lstate[op_i] == RELEASED ->
             lstate[op_i] = REVOKED_S        /* the record says fenced */
          :: else -> skip
          fi;
          soft_ack[op_i] = false; soft_revack[op_i] = false;
          if
          :: RECALL_OPEN(op_i) ->
             SEND(toh[op_i], RECALL, op_i, lepoch[op_i], lrecall[op_i], 0)
          :: lstate[op_i] == RECALLING && fencing[op_i] ->
             SEND(toown, FENCE, op_i, lepoch[op_i], 0, 0)
          :: lstate[op_i] == REVOKED_S ->
             SEND(toh[op_i], REVOKED, op_i, lepoch[op_i], 0, 0)
          :: else -> skip
          fi;
          op_i++
       :: else -> break
       od
     }
#endif
  /* ---- BeginChange: a Quiesced volume starts its reshape/migration (b) */
  :: atomic {
       phase == QUIESCED ->
       op_i = 0;
       do
       :: op_i < NH ->
          assert(!HOLDS(op_i));         /* Released, or Revoked = fenced */
          assert(!REACHES(op_i));       /* and no holder can reach memory */
          op_i++
       :: else -> break
       od;
       phase = CHANGING
     }
  /* ---- ChangeDone: back to Ready at a new epoch (d) */
  :: atomic {
       phase == CHANGING ->
       assert(epoch < 255);
       epoch++;
       phase = READY
     }
  od
}

/* The owner fences holder ow_h for epoch ow_e: invalidate the holder's window
   of that epoch (or older) and remember the epoch, so that no window of it is
   ever opened again; then confirm. */
inline ow_fence() {
  if
  :: window[ow_h] != 0 && window[ow_h] <= ow_e -> window[ow_h] = 0
  :: else -> skip
  fi;
  if
  :: fenced_ep[ow_h] < ow_e -> fenced_ep[ow_h] = ow_e    /* (d) */
  :: else -> skip
  fi;
  SEND(toop, FENCED, ow_h, ow_e, 0, 0)
}

#define OWRECV(H) \
  :: atomic { toown ?? FENCE, H, ow_e, ow_r, ow_f -> ow_h = H; ow_fence() }

active proctype Owner() {
end:
  do
  OWRECV(0) OWRECV(1)
#if NH > 2
  OWRECV(2)
#endif
  od
}

/* A holder handles one message from the operator. Textually expanded inside
   Holder, so it uses the holder's locals (me, seen, asked, dirty, wrote). */
inline ho_receive() {
  if
  :: ho_m == GRANTED ->
     if
     :: asked && ho_e > seen ->                       /* (d) */
        asked = false; hep[me] = ho_e; seen = ho_e; wrote = false;
        /* connect: the owner re-reads the lease (fresh) and opens a
           window only if lib/lease CheckAccess() allows it (Granted, or
           Recalling without a decided revoke, at that epoch) and it has
           never fenced that epoch (the grant may arrive arbitrarily
           late) */
        if
        :: (lstate[me] == GRANTED_S || RECALL_OPEN(me)) &&
           lepoch[me] == hep[me] &&
           fenced_ep[me] < hep[me] ->
           window[me] = hep[me]; mapped[me] = true
        :: else -> hep[me] = 0   /* refused (visible); wait */
        fi
     :: else -> skip             /* stale: recalled before it came */
     fi
  :: ho_m == RECALL ->
     if
     :: ho_e >= seen ->
        /* quiesce, flush, drop the mapping, then ack with the ID */
        ho_flushed = true;
        if
        :: mapped[me] && dirty && window[me] == hep[me] ->
           access_ok(me); dirty = false
        :: mapped[me] && dirty && window[me] != hep[me] ->
           ho_flushed = false; dirty = false   /* lost: app told */
        :: else -> skip
        fi;
        assert(!ho_flushed || !dirty);                /* (f) */
        mapped[me] = false; hep[me] = 0; seen = ho_e; asked = false;
        SEND(toop, ACK, me, ho_e, ho_r, ho_flushed)
     :: else -> skip             /* recall of an older grant */
     fi
  :: ho_m == REVOKED ->
     /* sticky: the app sees "revoked"; acknowledge, then may re-request */
     if
     :: ho_e >= seen ->
        mapped[me] = false; hep[me] = 0; seen = ho_e; asked = false;
        dirty = false
     :: else -> skip
     fi;
     SEND(toop, REVACK, me, ho_e, 0, 0)
  fi
}

/* Holder `me`. Roles keep the state space small while every behaviour is
   present: holder 0 may also release voluntarily, holder 1 may request
   again (after its ack or its revocation), holder 2 may crash. */
active [NH] proctype Holder() {
  /* pids 0, 1 are the operator and the owner */
  byte me = _pid - 2;
  bool canrelease = (me == 0);
  bool canrerequest = (me == 1);
  bool cancrash = (me == NH - 1);
  byte seen = 0;      /* newest epoch heard of (grant or recall) */
  bool asked = true;  /* a request is outstanding (sent below) */
  bool dirty = false; /* written data not yet flushed */
  bool wrote = false; /* one write per grant keeps the model small */
  byte reqs = 0;
  SEND(toop, REQ, me, 0, 0, 0);
end:
  do
  /* ---- request again after a release, recall or revocation */
  :: atomic {
       canrerequest && !asked && hep[me] == 0 && reqs < REQS ->
       reqs++; asked = true; SEND(toop, REQ, me, 0, 0, 0)
     }
  /* ---- write (one-sided): lands only through an open window of our epoch;
          otherwise the application gets an access error (visible) */
  :: atomic {
       mapped[me] && !wrote ->
       wrote = true;
       if
       :: window[me] == hep[me] -> access_ok(me); dirty = true
       :: else -> mapped[me] = false
       fi
     }
#ifdef FLUSH_STEP
  /* ---- flush on its own (the application's write ack comes only from a
          successful flush); off by default to keep the state space small:
          the flushes at recall and release below check the same things */
  :: atomic {
       mapped[me] && dirty ->
       if
       :: window[me] == hep[me] -> access_ok(me); dirty = false
       :: else -> mapped[me] = false; dirty = false   /* failed: visible */
       fi
     }
#endif
  /* ---- voluntary release: flush, drop the mapping, then tell */
  :: atomic {
       canrelease && mapped[me] ->
       if
       :: dirty && window[me] == hep[me] -> access_ok(me); dirty = false
       :: dirty && window[me] != hep[me] -> dirty = false   /* failed: visible */
       :: else -> skip
       fi;
       mapped[me] = false;
       SEND(toop, REL, me, hep[me], 0, 0); hep[me] = 0
     }
  /* ---- messages from the operator: any kind may be taken next */
  :: atomic { toh[me] ?? GRANTED, ho_h, ho_e, ho_r, ho_f -> ho_m = GRANTED; ho_receive() }
  :: atomic { toh[me] ?? RECALL, ho_h, ho_e, ho_r, ho_f -> ho_m = RECALL; ho_receive() }
  :: atomic { toh[me] ?? REVOKED, ho_h, ho_e, ho_r, ho_f -> ho_m = REVOKED; ho_receive() }
  /* ---- crash: the node is gone for good */
  :: cancrash -> goto end_dead
  od;
end_dead:
  do
  :: toh[me] ?? _, _, _, _, _      /* messages to a dead node are lost */
  od
}

/* (e) every recall completes: once Recalling, eventually Quiesced. */
ltl recall_completes { [] ((phase == VRECALL) -> <> (phase == QUIESCED)) }
