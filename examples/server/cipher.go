package main

import (
	"context"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"

	"github.com/pocketkms/kms"
)

// textItem is one plaintext or ciphertext of an encrypt, decrypt or
// re-encrypt call, with its context.
type textItem struct {
	text string // as sent: base64 plaintext or a ciphertext
	data []byte // the decoded plaintext (encrypt only); cleared after use
	ctx  []byte
}

func clearItems(items []textItem) {
	for i := range items {
		clear(items[i].data)
	}
}

// textOp describes one of the three string-in, string-out cipher calls, so
// that the v2 (string or array), v3 single and v3 batch handlers share
// everything but the envelope.
type textOp struct {
	in, out string                    // JSON field names of the input and output
	check   func(it *textItem) string // format check; "" when good
	one     func(ctx context.Context, p cipherPlane, tag string, it textItem) (string, error)
	many    func(ctx context.Context, p cipherPlane, tag string, items []textItem) ([]string, error)
}

var opEncrypt = textOp{
	in: "plaintext", out: "ciphertext",
	check: func(it *textItem) string {
		var problem string
		it.data, problem = decodeLimited(it.text, maxPlaintextChars, kms.MaxAESPlaintext)
		return problem
	},
	one: func(ctx context.Context, p cipherPlane, tag string, it textItem) (string, error) {
		return p.Encrypt(ctx, tag, it.data, it.ctx)
	},
	many: func(ctx context.Context, p cipherPlane, tag string, items []textItem) ([]string, error) {
		in := make([]kms.EncryptItem, len(items))
		for i, it := range items {
			in[i] = kms.EncryptItem{Plaintext: it.data, Context: it.ctx}
		}
		return p.BatchEncrypt(ctx, tag, in)
	},
}

func checkCiphertext(it *textItem) string { return checkEnvelope(it.text) }

func decryptItems(items []textItem) []kms.DecryptItem {
	in := make([]kms.DecryptItem, len(items))
	for i, it := range items {
		in[i] = kms.DecryptItem{Ciphertext: it.text, Context: it.ctx}
	}
	return in
}

// encodePlaintext base64-encodes a plaintext and clears it.
func encodePlaintext(pt []byte) string {
	s := base64.StdEncoding.EncodeToString(pt)
	clear(pt)
	return s
}

var opDecrypt = textOp{
	in: "ciphertext", out: "plaintext", check: checkCiphertext,
	one: func(ctx context.Context, p cipherPlane, tag string, it textItem) (string, error) {
		pt, err := p.Decrypt(ctx, tag, it.text, it.ctx)
		if err != nil {
			return "", err
		}
		return encodePlaintext(pt), nil
	},
	many: func(ctx context.Context, p cipherPlane, tag string, items []textItem) ([]string, error) {
		pts, err := p.BatchDecrypt(ctx, tag, decryptItems(items))
		if err != nil {
			return nil, err
		}
		out := make([]string, len(pts))
		for i, pt := range pts {
			out[i] = encodePlaintext(pt)
		}
		return out, nil
	},
}

var opReEncrypt = textOp{
	in: "ciphertext", out: "ciphertext", check: checkCiphertext,
	one: func(ctx context.Context, p cipherPlane, tag string, it textItem) (string, error) {
		return p.ReEncrypt(ctx, tag, it.text, it.ctx)
	},
	many: func(ctx context.Context, p cipherPlane, tag string, items []textItem) ([]string, error) {
		return p.BatchReEncrypt(ctx, tag, decryptItems(items))
	},
}

// textHandler serves encrypt, decrypt and re-encrypt. On v2 the input may be
// a string or an array of 1..100 strings (one context for all), answered in
// the same shape; an array runs as one atomic batch. On v3 it is a string.
func textHandler(op textOp) handler {
	return func(c *call) (any, error) {
		o, err := c.body()
		if err != nil {
			return nil, err
		}
		o.require(op.in)
		var vals []string
		isList := false
		if c.api == v2 {
			vals, isList, _ = o.strOrList(op.in)
		} else if s, ok := o.str(op.in); ok {
			vals = []string{s}
		}
		encCtx := o.context("context")
		if err := o.err(); err != nil {
			return nil, err
		}
		items := make([]textItem, len(vals))
		defer clearItems(items)
		for i, v := range vals {
			items[i] = textItem{text: v, ctx: encCtx}
			if problem := op.check(&items[i]); problem != "" {
				name := op.in
				if isList {
					name += "[" + strconv.Itoa(i) + "]"
				}
				o.failAt(name, problem)
			}
		}
		if err := o.err(); err != nil {
			return nil, err
		}
		if !isList {
			out, err := op.one(c.ctx, c.plane(), c.tag, items[0])
			if err != nil {
				return nil, err
			}
			return map[string]string{op.out: out}, nil
		}
		outs, err := op.many(c.ctx, c.plane(), c.tag, items)
		if err != nil {
			return nil, err
		}
		return map[string][]string{op.out: outs}, nil
	}
}

// batchHandler serves the v3 batch calls: {"requests":[{in, context}, …]}
// with 1..100 items, answered {"results":{"<index>":{out}}}. A wrong JSON
// type anywhere fails the whole body ({"error"} with fieldErrors); missing or
// malformed items fail as {"failures"} by index (phase 1) before anything
// runs; the Engine's own item failures come back the same way.
func batchHandler(op textOp) handler {
	return func(c *call) (any, error) {
		o, err := c.body()
		if err != nil {
			return nil, err
		}
		o.require("requests")
		raws, ok := o.list("requests")
		if ok && (len(raws) == 0 || len(raws) > maxArrayItems) {
			o.fail("requests", "must hold 1.."+strconv.Itoa(maxArrayItems)+" items")
		}
		items := make([]textItem, len(raws))
		defer clearItems(items)
		present := make([]bool, len(raws))
		for i, raw := range raws {
			item, ok := o.sub(raw, "requests["+strconv.Itoa(i)+"]")
			if !ok {
				continue
			}
			items[i].text, present[i] = item.str(op.in)
			items[i].ctx = item.context("context")
		}
		if err := o.err(); err != nil {
			return nil, err
		}
		problems := map[int][]fieldError{}
		for i := range items {
			name := "requests[" + strconv.Itoa(i) + "]." + op.in
			switch {
			case !present[i]:
				problems[i] = []fieldError{{Field: name, Message: "is required"}}
			default:
				if problem := op.check(&items[i]); problem != "" {
					problems[i] = []fieldError{{Field: name, Message: problem}}
				}
			}
		}
		if len(problems) > 0 {
			return nil, batchFailures(problems)
		}
		outs, err := op.many(c.ctx, c.plane(), c.tag, items)
		if err != nil {
			return nil, err
		}
		results := make(map[string]map[string]string, len(outs))
		for i, s := range outs {
			results[strconv.Itoa(i)] = map[string]string{op.out: s}
		}
		return map[string]any{"results": results}, nil
	}
}

// customKey serves Create Custom Key (v2) and issue-custom-key (v3).
// An empty body asks for a 256-bit key, ciphertext only. The key version is
// "key_version" on v2 (as NAVER documents it) and "keyVersion" on v3.
func customKey(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	bits, hasBits := o.integer("bits", 0, 1<<20)
	if hasBits && bits != 128 && bits != 256 && bits != 512 {
		o.fail("bits", "must be 128, 256 or 512")
	}
	plain, _ := o.boolean("requestPlainKey")
	encCtx := o.context("context")
	if err := o.err(); err != nil {
		return nil, err
	}
	ck, err := c.plane().CreateCustomKey(c.ctx, c.tag, kms.CustomKeyRequest{Bits: bits, RequestPlainKey: plain, Context: encCtx})
	if err != nil {
		return nil, err
	}
	out := map[string]any{"ciphertext": ck.Ciphertext}
	if c.api == v2 {
		out["key_version"] = ck.KeyVersion
	} else {
		out["keyVersion"] = ck.KeyVersion
	}
	if plain {
		out["plaintext"] = encodePlaintext(ck.Plaintext)
	}
	return out, nil
}

// signData reads the data member of sign and verify: base64 of the message,
// at most 10,924 characters and 8,192 bytes.
func signData(o object) []byte {
	o.require("data")
	s, ok := o.str("data")
	if !ok {
		return nil
	}
	data, problem := decodeLimited(s, maxSignDataChars, kms.MaxSignData)
	if problem != "" {
		o.fail("data", problem)
	}
	return data
}

// sign serves Sign: {"data"} → {"signature"}.
func sign(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	data := signData(o)
	if err := o.err(); err != nil {
		return nil, err
	}
	sig, err := c.plane().Sign(c.ctx, c.tag, data)
	if err != nil {
		return nil, err
	}
	return map[string]string{"signature": sig}, nil
}

// verify serves Verify: {"data","signature"} → {"valid"}. A signature that
// does not match answers valid:false, not an error.
func verify(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	data := signData(o)
	o.require("signature")
	sig, ok := o.str("signature")
	if ok {
		if problem := checkEnvelope(sig); problem != "" {
			o.fail("signature", problem)
		}
	}
	if err := o.err(); err != nil {
		return nil, err
	}
	valid, err := c.plane().Verify(c.ctx, c.tag, data, sig)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"valid": valid}, nil
}

// v2PublicKey serves get-pub-key: {"keyVersion"} (1..100, default the
// current version) → {"publicKey": PEM}.
func v2PublicKey(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	v, _ := o.integer("keyVersion", 1, kms.MaxVersions)
	if err := o.err(); err != nil {
		return nil, err
	}
	pem, err := c.plane().GetPublicKey(c.ctx, c.tag, uint32(v))
	if err != nil {
		return nil, err
	}
	return map[string]string{"publicKey": pem}, nil
}

// v3PublicKey serves GET …/versions/{version}/public-key →
// {"keyTag","version","publicKey"}.
func v3PublicKey(c *call) (any, error) {
	v, err := c.version(math.MaxInt32)
	if err != nil {
		return nil, err
	}
	pem, err := c.plane().GetPublicKey(c.ctx, c.tag, v)
	if err != nil {
		return nil, err
	}
	return map[string]any{"keyTag": c.keyTag(), "version": v, "publicKey": pem}, nil
}

// version parses the {version} path value: decimal digits, 1..max.
func (c *call) version(max int) (uint32, error) {
	n, ok := parseDecimal(c.r.PathValue("version"), 1, max)
	if !ok {
		return 0, &apiError{status: http.StatusBadRequest, code: codeInvalidParameter,
			fields: []fieldError{{Field: "version", Message: "must be an integer from 1 to " + strconv.Itoa(max)}}}
	}
	return uint32(n), nil
}
