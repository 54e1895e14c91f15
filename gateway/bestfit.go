package gateway

// bestFitLow and bestFitHigh bound bestFitASCII's characters
// (TestBestFitTable).
const bestFitLow, bestFitHigh = 0x00a1, 0x301e

// bestFitASCII holds the characters that Windows' best fit turns into an
// ASCII character although their compatibility decomposition is not that
// character (so formBestFit's reading, NFKD without non-spacing marks,
// misses them): "/a\u0111min" ("/ađmin", U+0111 LATIN SMALL LETTER D WITH
// STROKE) and "/\u03b1dmin" ("/αdmin") are "/admin" for a program that
// reads paths in code page 1252, "/\u00c6DMIN" ("/ÆDMIN") is "/ADMIN" in
// 1250, "/v\u0661" (ARABIC-INDIC DIGIT ONE) is "/v1" in 1256,
// "/public\u2215..\u2215admin" (U+2215 DIVISION SLASH) is
// "/public/../admin", and so is "/public/..\u00b4admin" (U+00B4 ACUTE
// ACCENT) in Greek (1253); "\u00a5" (YEN SIGN) and "\u20a9" (WON SIGN)
// are a backslash in the Japanese and Korean code pages (932, 949).
//
// From the WCTABLE (Unicode to code page) of each of Unicode's
// WindowsBestFit tables, bestfit874.txt and bestfit1250.txt to
// bestfit1258.txt, and the single-byte targets of the double-byte ones
// (932, 936, 949, 950, 1361; their CJK, Hangul and private-use runs map to
// two bytes): every character they map to a byte from '!' to '~' whose
// reading differs. Where code pages disagree, a slash or backslash wins
// ("\u00a5" is 'Y' in 1250), then the letter ("\u2514" is '+' in 1252 and
// 'L' in 1250, "\u00f0" 'd' in 932 and 'e' in 936), then 1252's, 1250's.
// A character NFKD reads otherwise keeps that reading in formNFKC:
// "\u2081" (SUBSCRIPT ONE) is '1' there, and '0' here, as 1254 writes it.
// Non-spacing marks that best fit turns into ASCII (U+0300 into '`',
// U+0331 into '_') are not here: the reading drops them, as best fit drops
// the accent of a letter the code page lacks, and none of them is a dot,
// a slash or a ';'.
var bestFitASCII = map[rune]byte{
	0x00a1: '!', 0x00a2: 'c', 0x00a3: 'L', 0x00a5: '\\', 0x00a6: '|', 0x00a9: 'c', 0x00ad: '-',
	0x00ae: 'R', 0x00b4: '/', 0x00bc: '1', 0x00bd: '1', 0x00be: '3', 0x00bf: '?', 0x00c6: 'A',
	0x00d0: 'D', 0x00d8: 'O', 0x00de: 'T', 0x00df: 's', 0x00e6: 'a', 0x00f0: 'd', 0x00f8: 'o',
	0x00fe: 't', 0x0110: 'D', 0x0111: 'd', 0x0126: 'H', 0x0127: 'h', 0x0131: 'i', 0x0141: 'L',
	0x0142: 'l', 0x0152: 'O', 0x0153: 'o', 0x0166: 'T', 0x0167: 't', 0x0180: 'b', 0x0189: 'D',
	0x0191: 'F', 0x0192: 'f', 0x0197: 'I', 0x019a: 'l', 0x019f: 'O', 0x01ab: 't', 0x01ae: 'T',
	0x01b6: 'z', 0x01c0: '|', 0x01c3: '!', 0x01e4: 'G', 0x01e5: 'g', 0x0261: 'g', 0x02b9: '\'',
	0x02ba: '"', 0x02bc: '\'', 0x02c4: '^', 0x02c6: '^', 0x02c7: '^', 0x02c8: '\'', 0x02cb: '`',
	0x02cd: '_', 0x02d8: '^', 0x02d9: '\'', 0x02dc: '~', 0x0393: 'G', 0x0398: 'T', 0x03a3: 'S',
	0x03a6: 'F', 0x03a9: 'O', 0x03b1: 'a', 0x03b4: 'd', 0x03b5: 'e', 0x03c0: 'p', 0x03c3: 's',
	0x03c4: 't', 0x03c6: 'f', 0x04bb: 'h', 0x0589: ':', 0x0660: '0', 0x0661: '1', 0x0662: '2',
	0x0663: '3', 0x0664: '4', 0x0665: '5', 0x0666: '6', 0x0667: '7', 0x0668: '8', 0x0669: '9',
	0x066a: '%', 0x2010: '-', 0x2011: '-', 0x2017: '=', 0x2032: '\'', 0x2035: '`', 0x203c: '!',
	0x2044: '/', 0x2081: '0', 0x20a7: 'P', 0x20a9: '\\', 0x2107: 'E', 0x2118: 'P', 0x212e: 'e',
	0x2190: '<', 0x2191: '^', 0x2192: '>', 0x2193: 'v', 0x2194: '-', 0x2195: '|', 0x21a8: '|',
	0x2212: '-', 0x2215: '/', 0x2216: '\\', 0x2217: '*', 0x221a: 'v', 0x221e: '8', 0x221f: 'L',
	0x2223: '|', 0x2229: 'n', 0x2236: ':', 0x223c: '~', 0x2261: '=', 0x2264: '=', 0x2265: '=',
	0x2303: '^', 0x2320: '(', 0x2321: ')', 0x2329: '<', 0x232a: '>', 0x2500: '-', 0x2502: '-',
	0x250c: '+', 0x2510: '+', 0x2514: 'L', 0x2518: '+', 0x251c: '+', 0x2524: '+', 0x252c: 'T',
	0x2534: '-', 0x253c: '+', 0x2550: '-', 0x2552: '+', 0x2553: '+', 0x2554: '+', 0x2555: '+',
	0x2556: '+', 0x2557: '+', 0x2558: 'L', 0x2559: 'L', 0x255a: 'L', 0x255b: '+', 0x255c: '+',
	0x255d: '+', 0x2564: 'T', 0x2565: 'T', 0x2566: 'T', 0x2567: '-', 0x2568: '-', 0x2569: '-',
	0x256a: '+', 0x256b: '+', 0x256c: '+', 0x2580: '-', 0x2584: '_', 0x2588: '-', 0x2591: '-',
	0x2592: '-', 0x2593: '-', 0x25ac: '-', 0x25b2: '^', 0x25ba: '>', 0x25c4: '<', 0x25cb: '0',
	0x25d9: '0', 0x263a: 'O', 0x263b: 'O', 0x263c: '0', 0x2640: '+', 0x2642: '>', 0x266a: 'd',
	0x266b: 'd', 0x2758: '|', 0x3008: '<', 0x3009: '>', 0x301a: '[', 0x301b: ']', 0x301d: '"',
	0x301e: '"',
}
